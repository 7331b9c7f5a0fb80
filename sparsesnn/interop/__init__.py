"""A finished run's model for other tools: the compacted model as pt / safetensors (:mod:`.export`), NIR graphs
written and read (:mod:`.nir_write`, :mod:`.nir_read`), the BatchNorm fold both NIR and deploy use (:mod:`.fold`),
and the round trip through the peer libraries' own NIR importers (:mod:`.nir_peers`)."""
