"""Data stages: sample, revise (SEFT reviser / SRT critic), judge, best-of, and the builders of
reviser and judge-augmented SFT data. Each stage is a function; the CLI only parses options."""
