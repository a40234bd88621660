"""The shared training core: what every training loop of the studies (U-Net, FLUX LoRA, DDPM) uses.

  launch.py      one process, torchrun or mp.spawn; NCCL/gloo; `Context` (rank, world, device,
                 is_main, say, wrap in DDP, mean over processes, gather)
  precision.py   fp32/bf16/fp16: the autocast context and the GradScaler (`Precision`), TF32 switch
  checkpoint.py  the checkpoint dict: atomic save, load with a format check, every process's RNG
                 states for exact resume, resume/last.pt -> checkpoint.pt at the end (`Store`)
  guards.py      TrainingError; NaN/inf losses named by step; out of memory named by micro-batch
  meter.py       metrics rows: samples/s, data-wait fraction, TFLOP/s and MFU; steady rate,
                 final loss, metrics.csv
  flops.py       counted model FLOPs and the GPUs' peak FLOP/s (for MFU)
  compat.py      fallbacks for the older PyTorch of the K80 env

A loop reads top to bottom (see diffscale/train/unet.py `fit` for the pattern):

    def fit(ctx, job):                                   # launch.run(fit, world, "cuda"|"cpu", job)
        prec = precision.Precision(cfg.precision, ctx.device_type)
        start, rows = restore(...)                       # checkpoint.load + checkpoint.restore_rng
        model = ctx.wrap(model)
        meter = Meter(rows, global_batch, ctx.world, flops_per_sample, peak, start, verbose=ctx.is_main)
        last_good = guards.LastGood()
        with guards.out_of_memory(ctx.device, micro, "how the micro-batch arises", "what to change"):
            for step in range(start, end):
                with meter.waiting(): batch = next(batches)
                with prec.autocast(): loss = ...
                prec.backward(loss); prec.clip(...); prec.step(optimizer)
                meter.add(loss.detach(), grad_norm, lr)
                if log: meter.row(step + 1, ctx.mean(meter.pending_losses()).tolist(), last_good)
                if checkpoint: rng = checkpoint.gather_rng(ctx); rank 0 saves; last_good.update(...)

The core imports only the ground layer (errors, atomic, provenance, metrics), never a study.
"""
