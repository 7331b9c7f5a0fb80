"""Training a configured run: the TOML schema (:mod:`.config`), config to live objects (:mod:`.factory`) and the
parts of a run built from them (:mod:`.components`), batches and the named random streams (:mod:`.batching`), one
optimiser step (:mod:`.step`) and one training step on a batch (:mod:`.batch_step`), the evaluation pass
(:mod:`.evaluation`), the loop with exact resume (:mod:`.trainer`), a finished run read back without a trainer
(:mod:`.run_reader`), the run directory's files (:mod:`.rundir`, :mod:`.checkpoint`), losses and distillation,
several processes (:mod:`.distributed`), TensorBoard and the allocator (:mod:`.runtime`)."""
