"""Built-in datasets."""

from pushforward.data.toys import TOYS, sample_toy

__all__ = ["TOYS", "sample_toy"]
