"""Benchmark of the storage engine against restic and borg on a generated VM disk (`make bench`)."""
