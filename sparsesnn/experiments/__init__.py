"""Many runs at once: a resumable grid of trainings (:mod:`.sweep`) and the HTML report of runs and sweeps
(:mod:`.report`)."""
