"""The LIF time loop's kernels: :mod:`.loops` (plain tensor code, CPU and any device), :mod:`.triton_kernels`
(CUDA, Triton) and :mod:`.op` (the ``torch.library`` operators around them and the choice of kernel)."""
