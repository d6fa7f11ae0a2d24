"""The trainer's user-facing errors.

Every failure a user can cause (a bad data set, a bad flag, a missing weights
file) is a `TrainerError` with one line that says what to do; the command line
prints it and exits non-zero. Anything else is a bug and keeps its traceback.
"""


class TrainerError(Exception):
    """A problem with the user's input, not with the trainer."""


class DatasetError(TrainerError):
    pass


class WeightsError(TrainerError):
    pass


class OutputError(TrainerError):
    pass


class ModelError(TrainerError):
    pass
