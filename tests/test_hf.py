"""Hugging Face transformers checkpoints load into our models strictly and give transformers' logits.

The fixtures in tests/fixtures/hf/ were written by transformers itself (tests/fixtures/hf/make_hf_fixture.py), so
these tests need neither transformers nor safetensors; the last two use them where they are installed.
"""
import pytest
import torch

from minideit import CheckpointError, create_model, load_checkpoint
from minideit.weights import read_safetensors, resolve_state_dict

from conftest import rel_err


@pytest.fixture(scope="module")
def hf_dir(fixtures_dir):
    return fixtures_dir / "hf"


@pytest.fixture(scope="module")
def reference(hf_dir):
    return torch.load(hf_dir / "hf_reference.pt")


def small_deit(depth: int = 2):
    return create_model("deit_tiny_distilled_patch16_224", num_classes=10, depth=depth).eval()


def test_distilled_deit_safetensors_gives_the_transformers_logits(hf_dir, reference):
    folder = hf_dir / "deit_tiny_distilled_2layers"
    for source in (folder, folder / "model.safetensors", str(folder)):  # a folder or the file, as path or text
        model = load_checkpoint(small_deit(), source)  # strict by default
        x = reference["deit_input"].float()
        with torch.no_grad():
            tokens = model.forward_features(x)
            cls_logits, dist_logits = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
            joint = model(x)
        assert rel_err(joint, reference["deit_logits"]) < 1e-4
        assert rel_err(cls_logits, reference["deit_cls_logits"]) < 1e-4
        assert rel_err(dist_logits, reference["deit_dist_logits"]) < 1e-4


def test_vit_pytorch_model_bin_gives_the_transformers_logits(hf_dir, reference):
    model = create_model("deit_tiny_patch4_32", num_classes=10, depth=1).eval()
    load_checkpoint(model, hf_dir / "vit_tiny_1layer" / "pytorch_model.bin")
    with torch.no_grad():
        assert rel_err(model(reference["vit_input"].float()), reference["vit_logits"]) < 1e-4


def test_a_model_that_does_not_fit_is_named_in_one_line(hf_dir):
    folder = hf_dir / "deit_tiny_distilled_2layers"
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.2\.") as e:
        load_checkpoint(small_deit(depth=3), folder)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="10 classes but the model has 1000"):
        load_checkpoint(create_model("deit_tiny_distilled_patch16_224", depth=2), folder)


def test_deit_for_image_classification_has_no_distillation_head(hf_dir):
    # DeiTForImageClassification: the distilled backbone with one classifier, on the class token only.
    state = read_safetensors(hf_dir / "deit_tiny_distilled_2layers" / "model.safetensors")
    state = {k.replace("cls_classifier", "classifier"): v for k, v in state.items()
             if not k.startswith("distillation_classifier")}
    mapped = resolve_state_dict(state)
    assert torch.equal(mapped["head.weight"], state["classifier.weight"]) and "head_dist.weight" not in mapped
    with pytest.raises(CheckpointError, match="no distillation head"):
        load_checkpoint(small_deit(), state)


def test_unknown_keys_are_named(hf_dir):
    state = dict(torch.load(hf_dir / "vit_tiny_1layer" / "pytorch_model.bin"))
    state["vit.pooler.dense.weight"] = torch.zeros(192, 192)  # a ViTModel's pooler: not part of DeiT
    with pytest.raises(CheckpointError, match=r"unexpected keys: vit\.pooler\.dense\.weight"):
        load_checkpoint(create_model("deit_tiny_patch4_32", num_classes=10, depth=1), state)
    del state["vit.encoder.layer.0.attention.attention.value.weight"]
    with pytest.raises(CheckpointError, match="block 0 has no attention value weight"):
        resolve_state_dict(state)


def test_finetune_path_of_the_trainer_takes_a_hugging_face_folder(hf_dir):
    # train.py's --finetune reads through resolve_state_dict; a new class count gets fresh heads
    from minideit.train import load_into
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=5, depth=2)
    load_into(model, resolve_state_dict(hf_dir / "deit_tiny_distilled_2layers"), "--finetune", allow_new_head=True)
    expected = read_safetensors(hf_dir / "deit_tiny_distilled_2layers" / "model.safetensors")
    assert torch.equal(model.cls_token, expected["deit.embeddings.cls_token"].float())


def test_broken_safetensors_file_is_one_line(tmp_path, hf_dir):
    data = (hf_dir / "deit_tiny_distilled_2layers" / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        resolve_state_dict(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="folder without model.safetensors or pytorch_model.bin"):
        resolve_state_dict(tmp_path)


def test_our_safetensors_reader_agrees_with_the_package(hf_dir):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = hf_dir / "deit_tiny_distilled_2layers" / "model.safetensors"
    ours, theirs = read_safetensors(path), safetensors_torch.load_file(path)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)


def test_a_live_transformers_state_dict_also_maps(reference):
    # transformers >= 5 names modules differently in memory (layers.N.attention.q_proj) than in Hub files.
    transformers = pytest.importorskip("transformers")
    config = transformers.DeiTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=768, num_labels=10, layer_norm_eps=1e-6)
    hf = transformers.DeiTForImageClassificationWithTeacher(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.1)
        expected = hf(pixel_values=reference["deit_input"].float()).logits
        got = load_checkpoint(small_deit(), hf.state_dict())(reference["deit_input"].float())
    assert rel_err(got, expected) < 1e-4
