"""How learners share what they learn: the methods (diffusion, GALA, centralised, isolated), the
mixing arithmetic they run on a block's parameters, and the transport that moves rows between
processes (one process, or torch.distributed under torchrun)."""
