"""learnserve's training package: a folder of images in, a verified exported learner and its manifest out.

Keep this file free of imports: `training.manifest` must import without fastai or torch.
"""
