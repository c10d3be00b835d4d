"""DistributedDataParallel on the CPU: two gloo processes train the real model; the
all-reduced gradient is the mean of the two shards' single-process gradients, gradients
and weights stay synchronised, each rank sees its own shard, only rank 0 writes."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(out_dir):
    from ggnet_fast.train import TrainConfig

    return TrainConfig(out_dir=out_dir, data="phantom", data_options={"n": 20, "size": 64},
                       split="holdout", test_fraction=0.2, val_fraction=0.1,
                       backbone="resnet18", image_size=64, schedule="iterations", iterations=3,
                       lr_step_iters=0, val_every=3, batch_size=2, lr=0.01, workers=0,
                       progress=False, tensorboard=False, backend="reference", device="cpu",
                       seed=1)


def _worker(rank, world, port, out_dir, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ggnet_fast.train import Trainer

    cfg = _config(out_dir)
    grads = []

    def record(trainer):
        # gradients after the DDP all-reduce of this step (before the next zero_grad)
        g = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
        grads.append(g.clone())

    trainer = Trainer(cfg, callbacks=[record])
    first = {}  # the weights and this rank's batch of the first step
    train_step = trainer.train_step

    def capture_first_step(batch):
        if not first:
            first["state"] = {k: v.clone() for k, v in trainer.model.module.state_dict().items()}
            first["image"], first["mask"] = batch["image"].clone(), batch["mask"].clone()
        return train_step(batch)

    trainer.train_step = capture_first_step
    shard = [k[0] for k in trainer.sampler]
    trainer.fit()
    torch.save({"model": trainer.model.module.state_dict(), "grads": grads, "shard": shard,
                "first": first,
                "ddp": isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)},
               os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_two_cpu_processes(tmp_path):
    out, res = str(tmp_path / "run"), str(tmp_path / "res")
    os.makedirs(res)
    mp.spawn(_worker, args=(2, _free_port(), out, res), nprocs=2, join=True)
    r0 = torch.load(os.path.join(res, "rank0.pt"), weights_only=True)
    r1 = torch.load(os.path.join(res, "rank1.pt"), weights_only=True)
    assert r0["ddp"] and r1["ddp"]
    assert not set(r0["shard"]) & set(r1["shard"]) and len(r0["shard"]) == len(r1["shard"])
    assert len(r0["grads"]) == 3
    for g0, g1 in zip(r0["grads"], r1["grads"]):
        assert g0.abs().sum() > 0
        torch.testing.assert_close(g0, g1, rtol=0, atol=0)
    # parameters are identical; BN running statistics are per process (DDP broadcasts
    # rank 0's buffers at the start of every forward, and rank 0 writes the checkpoint)
    for k, v in r0["model"].items():
        if "running_" not in k and "num_batches" not in k:
            assert torch.equal(v, r1["model"][k]), k
    assert_first_gradient_is_mean_of_shards(out, [r0, r1])
    ck = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    assert ck["progress"]["global_step"] == 3
    assert ck["world_size"] == 2  # a resume with another number of processes is refused
    for k, v in ck["model"].items():
        assert torch.equal(v, r0["model"][k]), k


def assert_first_gradient_is_mean_of_shards(out_dir, ranks):
    """Redo step 1 in this process, one shard at a time (same weights, batch and dropout
    seed as that rank; BatchNorm statistics are per shard on the CPU, as under DDP without
    SyncBatchNorm): DDP's all-reduced gradient must be the mean of the two."""
    cfg = _config(out_dir)
    assert all(torch.equal(v, ranks[1]["first"]["state"][k])
               for k, v in ranks[0]["first"]["state"].items())  # DDP's initial broadcast
    # One thread, like the workers: with batch 2 the ASPP image-pooling BatchNorm normalises
    # two values, which amplifies rounding differences between thread counts to ~1e-3.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shard_grads = _shard_gradients(cfg, ranks)
    finally:
        torch.set_num_threads(threads)
    expected = (shard_grads[0] + shard_grads[1]) / 2
    assert not torch.allclose(shard_grads[0], shard_grads[1], rtol=1e-2, atol=0)  # shards differ
    for result in ranks:
        got = result["grads"][0]
        assert got.shape == expected.shape
        err = float((got - expected).norm() / expected.norm())
        assert err < 1e-5, f"DDP gradient differs from the mean of the shards: {err=}"


def _shard_gradients(cfg, ranks):
    from ggnet_fast.train.loop import step_seed
    from ggnet_fast.train.build import build_loss, build_model

    shard_grads = []
    for rank, result in enumerate(ranks):
        torch.manual_seed(0)
        model = build_model(cfg)
        model.load_state_dict(result["first"]["state"])
        model.train()
        torch.manual_seed(step_seed(cfg.seed, rank, 0))
        loss = build_loss(cfg)(model(result["first"]["image"]), result["first"]["mask"])
        loss.backward()
        shard_grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                      if p.grad is not None]))
    return shard_grads
