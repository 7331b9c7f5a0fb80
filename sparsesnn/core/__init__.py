"""The floor everything else stands on: error types, registries, the settings contract, atomic files, state
restoration and the collectives. Imports nothing else of sparsesnn."""
