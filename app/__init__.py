"""learnserve's HTTP service: a fastai learner loaded once, exact batched predictions, clear errors."""
