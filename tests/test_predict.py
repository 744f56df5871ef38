"""``python -m minideit.predict``: top-k names, JSON, folders with a broken file, class names, attention maps."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from minideit import create_model, load_checkpoint
from minideit.data.transforms import build_transform
from minideit.tools import predict
from minideit.tools.attention import explicit_forward, rollout, token_maps

DEIT = "deit_tiny_distilled_patch16_224"


@pytest.fixture(scope="module")
def checkpoint(fixtures_dir):
    return fixtures_dir / f"{DEIT}-random.pth"


@pytest.fixture
def photos(tmp_path):
    """Three readable images (one in a sub-folder, one not square) and one file that is not an image."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, shape in (("a.png", (60, 80, 3)), ("b.jpg", (224, 224, 3)), ("sub/c.png", (300, 200, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored")
    return folder


def run(argv, capsys):
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_imagenet_names_ship_with_the_package():
    names = predict.imagenet_names()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"


def test_folder_topk_json_and_one_line_per_unreadable_file(photos, checkpoint, tmp_path, capsys):
    out_json = tmp_path / "preds.json"
    code, out, err = run([photos, "--model", DEIT, "--checkpoint", checkpoint, "--topk", "3", "--json", out_json],
                         capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "broken.jpg" in line] == [line for line in err.splitlines()
                                                                          if "unreadable, skipped" in line]
    assert len([line for line in err.splitlines() if "unreadable, skipped" in line]) == 1
    result = json.loads(out_json.read_text())
    assert [p["path"].rsplit("/", 1)[-1] for p in result["predictions"]] == ["a.png", "b.jpg", "c.png"]
    assert [u.rsplit("/", 1)[-1] for u in result["unreadable"]] == ["broken.jpg"]
    assert result["class_names"] == "ImageNet-1k"

    # the same numbers as the model itself on the evaluation transform
    model = load_checkpoint(create_model(DEIT), checkpoint).eval()
    transform = build_transform(False, 224)
    names = predict.imagenet_names()
    for record in result["predictions"]:
        with torch.no_grad():
            probs = model(transform(Image.open(record["path"]).convert("RGB"))[None]).softmax(-1)[0]
        top = probs.topk(3)
        assert [t["index"] for t in record["topk"]] == top.indices.tolist()
        assert [t["name"] for t in record["topk"]] == [names[i] for i in top.indices]
        assert np.allclose([t["prob"] for t in record["topk"]], top.values, atol=1e-5)
        assert {"cls_top1", "dist_top1", "heads_agree"} <= record.keys()
        assert record["heads_agree"] == (record["cls_top1"]["index"] == record["dist_top1"]["index"])
        assert f"{record['topk'][0]['name']}" in out
    assert out.count("class head:") == 3


def test_a_training_checkpoint_knows_its_model_and_class_names(tmp_path, photos, capsys):
    torch.manual_seed(0)
    model = create_model("deit_nano_distilled_patch4_32", num_classes=10)
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "args": {"model": "deit_nano_distilled_patch4_32", "input_size": 32,
                                                       "data_set": "synthetic"}}, ckpt)
    code, out, err = run([photos / "a.png", "--checkpoint", ckpt, "--topk", "10"], capsys)
    assert code == 0, err
    assert "deit_nano_distilled_patch4_32" in out and "at 32×32" in out
    for glyph in ("plus", "ring", "diamond"):
        assert glyph in out
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing{i}\n" for i in range(10)))
    code, out, err = run([photos / "a.png", "--checkpoint", ckpt, "--class-names", names], capsys)
    assert code == 0 and "thing" in out
    names.write_text("just one\n")
    code, out, err = run([photos / "a.png", "--checkpoint", ckpt, "--class-names", names], capsys)
    assert code == 2 and err.startswith("error:") and "1 names but the model has 10" in err


def test_attention_figure_and_maps(photos, checkpoint, tmp_path, capsys):
    png = tmp_path / "attention.png"
    code, out, err = run([photos / "a.png", photos / "b.jpg", "--model", DEIT, "--checkpoint", checkpoint,
                          "--attention", png], capsys)
    assert code == 0, err
    assert png.read_bytes().startswith(b"\x89PNG") and "paths agree" in out

    model = load_checkpoint(create_model(DEIT), checkpoint).eval()
    x = torch.stack([build_transform(False, 224)(Image.open(photos / n).convert("RGB")) for n in ("a.png", "b.jpg")])
    logits, maps = explicit_forward(model, x)
    with torch.no_grad():
        assert torch.allclose(logits["joint"], model(x), rtol=1e-4, atol=1e-5)  # explicit == fused
    assert len(maps) == 12 and maps[0].shape == (2, 3, 198, 198)
    tokens = token_maps(maps, distilled=True)
    assert set(tokens) == {"cls_last", "cls_rollout", "dist_last", "dist_rollout"}
    for name, m in tokens.items():
        assert m.shape == (2, 14, 14)
        assert torch.allclose(m.sum(dim=(1, 2)), torch.ones(2)), name  # a distribution over patches, per image
    rolled = rollout(maps)
    assert torch.allclose(rolled.sum(-1), torch.ones(2, 198), atol=1e-5)
    # one layer's rollout is its head-averaged attention, half-mixed with the identity
    single = rollout(maps[:1])
    assert torch.allclose(single, (maps[0].mean(1) + torch.eye(198)) / 2, atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["{img}"], "one of the arguments --pretrained --checkpoint is required"),
    (["{img}", "--checkpoint", "{ckpt}", "--model", DEIT, "--topk", "0"], "--topk must be at least 1"),
    (["{tmp}/absent.png", "--checkpoint", "{ckpt}", "--model", DEIT], "does not exist"),
    (["{img}", "--checkpoint", "{ckpt}", "--model", "deit_tiny_distiled"], "did you mean"),
    (["{img}", "--checkpoint", "{ckpt}", "--model", DEIT, "--json", "{tmp}/no/such/dir/p.json"], "does not exist"),
    (["{img}", "--checkpoint", "{ckpt}", "--model", "regnety_002", "--attention", "{tmp}/a.png"],
     "needs a transformer"),
    (["{img}", "--checkpoint", "{ckpt}", "--model", "deit_tiny_patch16_224"], "but the model is"),
    (["{img}", "--pretrained"], "--pretrained needs --model"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(argv, message, photos, checkpoint, tmp_path, capsys):
    fill = dict(img=photos / "a.png", ckpt=checkpoint, tmp=tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run([a.format(**fill) for a in argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert sorted(tmp_path.rglob("*")) == before
