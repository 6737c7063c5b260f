"""Running axolotl, which lives in its own environment: finding it, validating configs with its
own code, and running `train` / `merge-lora` as subprocesses with logs and progress."""
