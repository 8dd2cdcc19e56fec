"""Fidelity to CFSM's released FR training (issue 14 items 7, 8, 10, 12 and the deviations list): the clipping
scope, the AMP scope, training on an index list, the DA baselines' target list, progress lines off a terminal,
and harness.engine.release's comparison of a run with the released recipe."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

import harness.engine.train as trainer
from harness.core.config import RunConfig, apply_overrides
from harness.core.errors import DataFormatError
from harness.engine import release
from methods import resolve_hparams

pytestmark = pytest.mark.usefixtures("one_thread")
BUILD_MODEL = trainer.build_model  # the real one (tests below wrap it)

SMALL = {
    "data.input_size": "32",
    "model.widths": "8,16,16,32",
    "model.embedding_size": "32",
    "device": "cpu",
    "threads": "1",
    "optim.batch_size": "16",
}


def _cfg(release_dir: str, **extra) -> RunConfig:
    return apply_overrides(RunConfig(), {"data.release": release_dir, **SMALL, **extra})


# ------------------------------------------------------------------------------------------------ clipping scope
class LoudHead(torch.nn.Module):
    """A margin head whose class centres get an extra gradient of 1e6 per entry while the loss value is unchanged
    (``w.sum() - w.sum().detach()`` is exactly 0): the head's gradient norm alone is far above the clip value."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.inner = head

    def forward(self, embeddings, labels):
        w = self.inner.weight
        return self.inner(embeddings, labels) + 1e6 * (w.sum() - w.sum().detach())

    def scalars(self) -> dict[str, float]:  # the margin head's interface, for the trainer's logging
        return self.inner.scalars()

    def constants(self) -> dict:
        return self.inner.constants()


def _one_step(toy_rec_release, monkeypatch, loud: bool, **extra):
    original = BUILD_MODEL
    start = {}

    def build(cfg, num_classes, amp=False):
        backbone, head = original(cfg, num_classes, amp=amp)
        start.update({k: v.detach().clone() for k, v in backbone.named_parameters()})  # not BN's running stats
        return backbone, (LoudHead(head) if loud else head)

    monkeypatch.setattr(trainer, "build_model", build)
    # one step at the full learning rate, no weight decay: the backbone's update is lr x its (clipped) gradient
    cfg = _cfg(
        toy_rec_release,
        **{
            "optim.epochs": "0.34",
            "optim.warmup_epochs": "0",
            "optim.weight_decay": "0",
            "checkpoint_every": "0",
            **extra,
        },
    )
    result = trainer.train(cfg, progress=False)
    assert result.steps == 1
    after = dict(result.backbone.named_parameters())
    return {k: (after[k] - start[k]).detach() for k in start}, result


def test_a_huge_head_gradient_does_not_scale_the_backbone_step(toy_rec_release, monkeypatch):
    plain, res = _one_step(toy_rec_release, monkeypatch, loud=False)
    loud, res_loud = _one_step(toy_rec_release, monkeypatch, loud=True)
    assert res.info["grad_clip_scope"] == "backbone" and res.info["grad_clip"] == 5.0
    moved = sum(float(d.norm()) ** 2 for d in plain.values()) ** 0.5
    assert moved > 1e-4  # the step did something
    for k in plain:  # released scope: the head's gradient does not enter the backbone's clipping norm
        torch.testing.assert_close(loud[k], plain[k], rtol=0, atol=0, msg=k)
    everything, res_all = _one_step(toy_rec_release, monkeypatch, loud=True, **{"optim.grad_clip_scope": "all"})
    assert res_all.info["grad_clip_scope"] == "all"
    shrunk = sum(float(d.norm()) ** 2 for d in everything.values()) ** 0.5
    assert shrunk < 1e-3 * moved  # clipping everything together: the head's norm shrinks the backbone's step


def test_unknown_clip_scope_is_a_one_line_error(toy_rec_release):
    with pytest.raises(ValueError, match=r"optim.grad_clip_scope='head'.*backbone, all"):
        trainer.train(_cfg(toy_rec_release, **{"optim.grad_clip_scope": "head"}), progress=False)


# ------------------------------------------------------------------------------------------------ AMP scope
def test_amp_keeps_generator_and_final_layers_float32_and_the_trunk_reduced(
    toy_rec_release, generator_path, monkeypatch
):
    import methods.cfsm_guided as guided

    seen: dict[str, set] = {"generator": set(), "conv1": set(), "layer1": set(), "fc": set(), "features": set()}
    decode = guided.decode

    def spy_decode(generator, content, o):
        out = decode(generator, content, o)
        seen["generator"].add(out.dtype)
        return out

    original = BUILD_MODEL

    def build(cfg, num_classes, amp=False):
        backbone, head = original(cfg, num_classes, amp=amp)
        for name in ("conv1", "layer1", "fc", "features"):
            getattr(backbone, name).register_forward_hook(lambda m, i, o, name=name: seen[name].add(o.dtype))
        return backbone, head

    monkeypatch.setattr(guided, "decode", spy_decode)
    monkeypatch.setattr(trainer, "build_model", build)
    cfg = _cfg(
        toy_rec_release,
        method="cfsm_guided",
        amp="on",
        **{
            "optim.epochs": "0.67",
            "hparams.generator": generator_path,
            "hparams.generator_size": "16",
            "hparams.latent_dim": "16",
            "hparams.synthesize": "all",
            "checkpoint_every": "0",
        },
    )
    result = trainer.train(cfg, progress=False)
    assert math.isfinite(result.final_loss) and result.steps == 2
    assert seen["generator"] == {torch.float32}  # no autocast around the step: G runs float32 (as released)
    assert seen["conv1"] == {torch.bfloat16} and seen["layer1"] == {torch.bfloat16}  # the trunk's own autocast
    assert seen["fc"] == {torch.float32} and seen["features"] == {torch.float32}  # fc(x.float()), as insightface
    info = result.info
    assert info["amp"] is True and info["amp_backbone_trunk"] is True and info["amp_dtype"] == "bfloat16"
    assert info["amp_scope"] == trainer.AMP_SCOPE
    assert "grad_scaler_growth_interval" not in info  # no GradScaler for bf16 on the CPU


def test_the_trainer_builds_its_grad_scaler_with_the_configured_growth_interval(toy_rec_release, monkeypatch):
    built = []
    real = torch.amp.GradScaler

    def spy(*args, **kwargs):
        built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", spy)
    assert RunConfig().optim.amp_growth_interval == 100  # released: GradScaler(growth_interval=100)
    trainer.train(_cfg(toy_rec_release, **{"optim.epochs": "0.34", "checkpoint_every": "0"}), progress=False)
    trainer.train(
        _cfg(toy_rec_release, **{"optim.epochs": "0.34", "checkpoint_every": "0", "optim.amp_growth_interval": "7"}),
        progress=False,
    )
    assert [b["growth_interval"] for b in built] == [100, 7]


# ------------------------------------------------------------------------------------------------ index list
def test_training_over_an_index_list_uses_only_those_records(toy_rec_release, tmp_path, monkeypatch):
    from harness.data.recordio import FaceRecDataset

    keys = [3, 5, 8, 9, 10, 12, 17, 20, 21, 22, 30, 33, 34, 40, 41, 44, 45, 46, 47, 48]  # 20 of 48 (1-based keys)
    listed = tmp_path / "subset.txt"
    listed.write_text("# a subset\n" + "".join(f"{k}\n" for k in keys) + "\n")
    read: list[int] = []
    getitem = FaceRecDataset.__getitem__
    monkeypatch.setattr(
        FaceRecDataset, "__getitem__", lambda self, i: (read.append(int(self.image_keys[i])), getitem(self, i))[1]
    )

    source = trainer.SourceData(
        f"{toy_rec_release}/faces_synthface", 32, 8, seed=0, flip=False, cache=False, index_list=str(listed)
    )
    assert len(source) == 20 and source.steps_per_epoch == 20 // 8 and source.num_classes == 6
    labels = []
    for _ in range(3 * source.steps_per_epoch):
        _, y = source.next_batch()
        labels += y.tolist()
    assert read and set(read) <= set(keys)  # only listed records are ever decoded
    assert sorted(set(labels)) == sorted({(k - 1) // 8 for k in set(read)})  # the toy rec: 8 images per class

    read.clear()
    cfg = _cfg(toy_rec_release, **{"data.index_list": str(listed), "optim.epochs": "2", "checkpoint_every": "0"})
    result = trainer.train(cfg, progress=False)
    assert set(read) == set(keys)  # the cache holds exactly the listed records
    assert result.steps == 2 * (20 // 16)  # steps_per_epoch follows the list's length, not the RecordIO's 48
    assert result.info["train_images"] == 20
    assert result.info["index_list"] == {
        "path": str(listed),
        "length": 20,
        "sha256": hashlib.sha256(listed.read_bytes()).hexdigest(),
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("3\nabc\n", r"subset.txt:line 2: 'abc' is not a record key"),
        ("3\n999\n", r"subset.txt:line 2: record 999 is not an image of"),
        ("3\n4\n3\n", r"subset.txt:line 3: record 3 repeats line 1"),
        ("# nothing\n\n", r"subset.txt: the index list names no record"),
    ],
)
def test_a_bad_index_list_is_a_one_line_error_naming_file_and_line(toy_rec_release, tmp_path, text, message):
    listed = tmp_path / "subset.txt"
    listed.write_text(text)
    with pytest.raises(DataFormatError, match=message):
        trainer.SourceData(
            f"{toy_rec_release}/faces_synthface", 32, 1, seed=0, flip=False, cache=False, index_list=str(listed)
        )


# ------------------------------------------------------------------------------------------------ DA target list
def test_domain_adaptation_reads_the_configured_target_list(toy_rec_release, tmp_path):
    from harness.data.images import encode_jpeg

    root = tmp_path / "target"
    (root / "crops").mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = [f"crop_{i}_900.jpg" for i in range(6)]
    for n in names:
        (root / "crops" / n).write_bytes(encode_jpeg(np.clip(rng.normal(60, 30, (32, 32, 3)), 0, 255).astype(np.uint8)))
    (root / "target_list_wf_12k.txt").write_text("".join(n + "\n" for n in names))  # no target_list.txt here
    cfg = _cfg(
        toy_rec_release, method="coral", **{"data.target": str(root), "optim.epochs": "0.34", "checkpoint_every": "0"}
    )
    with pytest.raises(FileNotFoundError, match="target_list.txt"):
        trainer.train(cfg, progress=False)
    cfg = apply_overrides(cfg, {"data.target_list": "target_list_wf_12k.txt"})
    result = trainer.train(cfg, progress=False)
    assert math.isfinite(result.final_loss) and result.info["target_list"].endswith("target/target_list_wf_12k.txt")


# ------------------------------------------------------------------------------------------------ progress
def test_off_a_terminal_training_prints_plain_progress_lines(toy_rec_release, capsys):
    cfg = _cfg(toy_rec_release, **{"optim.epochs": "1", "log_every": "1", "checkpoint_every": "0"})
    trainer.train(cfg, progress=True)  # pytest's captured stderr is not a tty
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train source_only step")]
    assert [ln.split()[3] for ln in lines] == ["1/3", "2/3", "3/3"]
    for ln in lines:
        assert " loss " in ln and " lr " in ln and " img/s " in ln and " ETA " in ln
    trainer.train(apply_overrides(cfg, {"log_every": "2"}), progress=True)
    assert [
        ln.split()[3] for ln in capsys.readouterr().err.splitlines() if ln.startswith("train source_only step")
    ] == ["1/3", "3/3"]  # every log_every steps and the last


# ------------------------------------------------------------------------------------------------ deviations
def _released_cfg(**extra) -> RunConfig:
    values = {
        "device": "cuda",
        "amp": "on",
        "data.input_size": 112,
        "model.backbone": "r50",
        "model.stem_stride": 1,
        "model.embedding_size": 512,
        "optim.batch_size": 256,
        "optim.epochs": 20,
        "optim.warmup_epochs": 2,
        "data.rec": "faces_emore",
        **extra,
    }
    return apply_overrides(RunConfig(), values)


def test_the_released_recipe_on_8_processes_deviates_only_in_the_unpublished_training_set():
    devs = release.deviations(_released_cfg(), resolve_hparams("source_only"), world_size=8)
    assert [d["key"] for d in devs] == ["data.train_set"]
    d = devs[0]
    assert "3,870,313" in d["release"] and d["source"] == "config:22-24" and "not published" in d["why"]
    assert "every image" in d["ours"]
    listed = release.deviations(_released_cfg(**{"data.index_list": "lists/v2_39m.txt"}), {}, world_size=8)
    assert "lists/v2_39m.txt" in listed[0]["ours"]


def test_each_changed_knob_is_a_deviation_with_its_source_and_a_reason_from_the_value():
    cfg = _released_cfg(**{"optim.momentum": 0.8, "optim.amp_growth_interval": 2000, "optim.lr": 0.05})
    devs = {d["key"]: d for d in release.deviations(cfg, {}, world_size=1)}
    assert set(devs) == {
        "optim.momentum",
        "optim.amp_growth_interval",
        "optim.lr",
        "optim.global_batch",
        "data.train_set",
    }
    assert devs["optim.momentum"] == {
        "key": "optim.momentum",
        "ours": 0.8,
        "release": 0.9,
        "source": release.FR_RECIPE["optim.momentum"][1],
        "why": "set by the user",
    }
    assert devs["optim.global_batch"]["ours"] == 256 and devs["optim.global_batch"]["release"] == 2048
    assert devs["optim.global_batch"]["why"] == "256 per process x 1 process(es)"


def test_the_cpu_default_pipeline_gets_its_documented_reasons():
    from harness.run import make_config

    cfg = make_config([])  # the repository's params.yaml `run` section
    devs = {d["key"]: d for d in release.deviations(cfg, resolve_hparams(cfg.method), world_size=1)}
    assert devs["model.backbone"]["ours"] == "small" and devs["model.backbone"]["why"].startswith("CPU default")
    assert devs["data.input_size"]["why"].startswith("CPU default")
    assert devs["optim.epochs"]["why"].startswith("CPU default")
    # the clipping scope: everything trained on the CPU default, the backbone alone as released (the paper profile)
    assert cfg.optim.grad_clip_scope == "all" and devs["optim.grad_clip_scope"]["release"] == "backbone"
    assert (
        devs["optim.grad_clip_scope"]["why"].startswith("CPU default")
        and "ArcFace" in devs["optim.grad_clip_scope"]["why"]
    )
    paper = make_config(["--params", "profiles/paper/params.yaml"])
    assert paper.optim.grad_clip_scope == "backbone"
    assert "optim.grad_clip_scope" not in {d["key"] for d in release.deviations(paper, {}, world_size=8)}
    cpu_amp = release.deviations(apply_overrides(cfg, {"device": "cpu", "amp": "on"}), {}, world_size=1)
    assert any(d["key"] == "amp.dtype" and "bfloat16" in d["ours"] for d in cpu_amp)


def test_cfsm_deviations_synthesize_and_generator_provenance(tmp_path):
    from harness.models.cfsm import CFSMConfig, CFSMGenerator, save_generator

    cfg = _released_cfg(method="cfsm_guided")
    hp = resolve_hparams("cfsm_guided", overrides={"generator_size": 112, "generator": str(tmp_path / "missing.pt")})
    devs = {d["key"]: d for d in release.deviations(cfg, hp, world_size=8)}
    assert set(devs) == {"data.train_set", "hparams.synthesize", "hparams.generator"}
    assert devs["hparams.synthesize"]["ours"] == "selected" and devs["hparams.synthesize"]["release"] == "all"
    assert "the method's default" in devs["hparams.synthesize"]["why"]
    assert "not found" in devs["hparams.generator"]["ours"]

    g = CFSMGenerator(CFSMConfig(image_size=16, dim=8, mlp_dim=32, latent_dim=16))
    ours, imported = tmp_path / "ours.pt", tmp_path / "imported.pt"
    save_generator(str(ours), g, {"config": {}, "deviations": [{"key": "x"}, {"key": "y"}]})
    save_generator(str(imported), g, {"provenance": "official CFSM WiderFace70K.pth"})
    hp = resolve_hparams("cfsm_guided", overrides={"generator_size": 112, "synthesize": "all", "generator": str(ours)})
    devs = {d["key"]: d for d in release.deviations(cfg, hp, world_size=8)}
    assert set(devs) == {"data.train_set", "hparams.generator"}
    assert (
        "trained by this project's stage 1" in devs["hparams.generator"]["ours"]
        and "2 recorded" in devs["hparams.generator"]["ours"]
    )
    hp["generator"] = str(imported)
    assert [d["key"] for d in release.deviations(cfg, hp, world_size=8)] == ["data.train_set"]
    random_hp = resolve_hparams(
        "cfsm_random", overrides={"generator_size": 32, "synthesize": "all", "generator": str(imported)}
    )
    devs = {d["key"]: d for d in release.deviations(_released_cfg(method="cfsm_random"), random_hp, world_size=8)}
    assert set(devs) == {"data.train_set", "hparams.generator_size"}  # steps 0 is the paper's Ours*, not a deviation
    assert devs["hparams.generator_size"]["why"].startswith("CPU default")


def test_the_run_record_carries_the_deviations(toy_rec_release, tmp_path):
    import json

    from harness.run import main

    result = tmp_path / "result.json"
    args = ["--params", str(tmp_path / "none.yaml")]
    (tmp_path / "none.yaml").write_text("{}\n")
    assert (
        main(
            [
                *args,
                f"data.release={toy_rec_release}",
                *[f"{k}={v}" for k, v in SMALL.items()],
                "optim.epochs=0.34",
                "evaluate=false",
                f"out={tmp_path / 'runs'}",
                f"result={result}",
                "checkpoint_every=0",
            ]
        )
        == 0
    )
    doc = json.loads(result.read_text())
    keys = [d["key"] for d in doc["deviations"]]
    assert "data.train_set" in keys and "model.backbone" in keys
    info = json.loads(next((tmp_path / "runs").glob("*/info.json")).read_text())
    assert info["deviations"] == doc["deviations"]
    assert doc["train"]["grad_clip_scope"] == "backbone"


def test_an_evaluation_records_the_deviations_at_the_training_world_size(toy_rec_release, tmp_path):
    import json

    from harness.run import main

    ckpt = tmp_path / "m.pt"
    cfg = _cfg(toy_rec_release, **{"optim.epochs": "0.34", "checkpoint_every": "0"})
    trainer.train(cfg, checkpoint_path=str(ckpt), progress=False)
    state = torch.load(ckpt, weights_only=False)
    state["train_info"]["world_size"] = 8  # as if trained by torchrun on 8 processes
    torch.save(state, ckpt)
    (tmp_path / "none.yaml").write_text("{}\n")
    result = tmp_path / "eval.json"
    assert (
        main(
            [
                "--params",
                str(tmp_path / "none.yaml"),
                f"data.release={toy_rec_release}",
                *[f"{k}={v}" for k, v in SMALL.items()],
                "train=false",
                "evaluate=false",
                f"checkpoint={ckpt}",
                f"result={result}",
                "out=",
            ]
        )
        == 0
    )
    devs = {d["key"]: d for d in json.loads(result.read_text())["deviations"]}
    assert (
        devs["optim.global_batch"]["ours"] == 16 * 8
        and devs["optim.global_batch"]["why"] == "16 per process x 8 process(es)"
    )


def test_amp_deviations_follow_the_device_the_model_was_trained_on():
    cfg = _released_cfg(device="auto", amp="auto")
    keys = lambda dev: {d["key"]: d for d in release.deviations(cfg, {}, world_size=8, device=dev)}  # noqa: E731
    assert set(keys("cuda:0")) == {"data.train_set"}  # amp auto = on (fp16) on a GPU
    on_cpu = keys("cpu")
    assert on_cpu["amp"]["ours"] == "off" and on_cpu["amp"]["why"].startswith("no CUDA device")
    forced = {
        d["key"]: d for d in release.deviations(apply_overrides(cfg, {"amp": "on"}), {}, world_size=8, device="cpu")
    }
    assert "bfloat16" in forced["amp.dtype"]["ours"] and "amp" not in forced
