"""`python -m bench` (make bench): learnserve against the in-process limit and a learn.predict tutorial server."""
