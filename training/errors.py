"""The one exception the training CLI turns into a readable line and a non-zero exit."""


class TrainingError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""
