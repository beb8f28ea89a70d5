"""The command lines (`python -m app predict`, `score`): the same core as the server, without HTTP."""
