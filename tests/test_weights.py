"""load_checkpoint: every kind of source, position-embedding resize, clear refusals, and the checked download."""
import hashlib
import shutil

import pytest
import torch

from minideit import CheckpointError, create_model, load_checkpoint
from minideit.weights import OFFICIAL_FILES, download, hash_prefix

DEIT = "deit_tiny_distilled_patch16_224"


@pytest.fixture(scope="module")
def deit_state(fixtures_dir):
    return torch.load(fixtures_dir / f"{DEIT}-random.pth")["model"]


def same_weights(model, state):
    return all(torch.equal(model.state_dict()[k], v.to(model.state_dict()[k].dtype)) for k, v in state.items())


def test_load_from_path_wrapped_dict_and_plain_state_dict(fixtures_dir, deit_state):
    for source in (fixtures_dir / f"{DEIT}-random.pth", str(fixtures_dir / f"{DEIT}-random.pth"),
                   {"model": deit_state}, deit_state, {"module." + k: v for k, v in deit_state.items()}):
        model = load_checkpoint(create_model(DEIT), source)
        assert same_weights(model, deit_state)


def test_official_name_loads_from_the_cache_offline(fixtures_dir, deit_state, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDEIT_CACHE", str(tmp_path))
    shutil.copy(fixtures_dir / f"{DEIT}-random.pth", tmp_path / OFFICIAL_FILES[DEIT])
    model = load_checkpoint(create_model(DEIT), DEIT)
    assert same_weights(model, deit_state)
    model = create_model(DEIT, pretrained=True)  # the same through create_model
    assert same_weights(model, deit_state)


def test_position_embedding_is_resized_for_another_resolution(deit_state):
    model = load_checkpoint(create_model(DEIT, img_size=384), deit_state)
    assert model.pos_embed.shape == (1, 2 + 24 * 24, 192)
    assert torch.equal(model.pos_embed[:, :2], deit_state["pos_embed"][:, :2].float())  # cls and dist kept
    assert torch.equal(model.blocks[3].mlp.fc1.weight, deit_state["blocks.3.mlp.fc1.weight"].float())
    assert model.eval()(torch.randn(1, 3, 384, 384)).shape == (1, 1000)


def test_wrong_class_count_is_named(deit_state):
    with pytest.raises(CheckpointError, match="1000 classes but the model has 10"):
        load_checkpoint(create_model(DEIT, num_classes=10), deit_state)


def test_wrong_architecture_is_named(fixtures_dir, deit_state):
    with pytest.raises(CheckpointError, match="is a RegNet but the model is a distilled DeiT"):
        load_checkpoint(create_model(DEIT), fixtures_dir / "regnety_002-random.pth")
    with pytest.raises(CheckpointError, match="is a distilled DeiT but the model is a DeiT without"):
        load_checkpoint(create_model("deit_tiny_patch16_224"), deit_state)


def test_mismatched_width_names_the_keys(deit_state):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("deit_small_distilled_patch16_224"), deit_state)
    message = str(err.value)
    assert "mis-shaped keys" in message and "cls_token" in message and "\n" not in message


def test_missing_and_unexpected_keys_are_named(deit_state):
    state = dict(deit_state)
    del state["blocks.11.mlp.fc2.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing keys: blocks.11.mlp.fc2.bias; unexpected keys: extra.weight"):
        load_checkpoint(create_model(DEIT), state)


def test_not_a_checkpoint_and_missing_file(tmp_path):
    junk = tmp_path / "notes.pth"
    junk.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(create_model(DEIT), junk)
    with pytest.raises(CheckpointError, match="does not exist|neither an existing file"):
        load_checkpoint(create_model(DEIT), tmp_path / "absent.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(create_model(DEIT), tmp_path / "list.pth")


def test_download_checks_the_sha256_prefix_in_the_name(tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    good = download(payload.as_uri(), tmp_path / "cache" / f"model-{digest[:8]}.pth", progress=False)
    assert good.read_bytes() == payload.read_bytes()
    bad = tmp_path / "cache" / "model-00000000.pth"
    with pytest.raises(CheckpointError, match="SHA-256 does not start with 00000000"):
        download(payload.as_uri(), bad, progress=False)
    assert not bad.exists() and not list((tmp_path / "cache").glob("*.part"))


def test_official_file_names_carry_their_hash():
    assert len(OFFICIAL_FILES) == 9
    assert all(hash_prefix(f) and len(hash_prefix(f)) == 8 for f in OFFICIAL_FILES.values())
