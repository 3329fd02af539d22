"""The safety checker kind (issue 21): a tiny random-weight StableDiffusionSafetyChecker saved
as the Hub keeps CompVis/stable-diffusion-safety-checker, imported through the store, judges
pictures as diffusers' own checker does on the same pictures (its concept embeddings and
thresholds set from the pictures themselves, so one is flagged and another not, once through
the special-care adjustment); its input equals transformers' CLIPImageProcessor's; a lone ONNX
classifier and a Hugging Face classifier folder are read as their reference (torch + the
transformers processor) reads them; bad input is one sentence; upscalers, segmenters, face
detectors and image encoders are not taken for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import desktop.model_kinds as kinds
from desktop.model_kinds import safety_checker as kind
from desktop.model_store import ModelStore
from engine.errors import BadRequest, ModelError
from engine.export.formats import detect_format
from engine.safety import SafetyVerdict, check_picture, check_pictures, read_safety_description
from engine.safety.check import _rgb, network_input

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("diffusers")
pytest.importorskip("onnx")
from diffusers.pipelines.stable_diffusion.safety_checker import (  # noqa: E402
    StableDiffusionSafetyChecker,
    cosine_distance,
)
from transformers import CLIPConfig, CLIPImageProcessorPil  # noqa: E402

SIDE = 32  # the tiny vision model's picture side
NEVER = 1.5  # a threshold no cosine reaches


def one_sentence(error: pytest.ExceptionInfo) -> str:
    sentence = str(error.value)
    assert sentence.endswith(".") and "\n" not in sentence
    return sentence


# --- pictures ---------------------------------------------------------------------------------

def pictures() -> dict[str, np.ndarray]:
    """Unlike pictures of several shapes: a warm landscape gradient, a cold portrait of noise,
    a small square with a disc, and a transparent one (RGBA)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:48, 0:80]
    warm = np.stack([200 + 0 * x, 60 + x, 40 + y], axis=2).astype(np.uint8)
    cold = rng.integers(0, 256, (90, 40, 3)).astype(np.uint8)
    cold[..., 2] = 230
    y, x = np.mgrid[0:24, 0:24]
    disc = np.where(((x - 12) ** 2 + (y - 12) ** 2 < 60)[..., None], [250, 250, 20], [10, 90, 10])
    clear = rng.integers(0, 256, (40, 56, 4)).astype(np.uint8)
    return {"warm": warm, "cold": cold, "disc": disc.astype(np.uint8), "clear": clear}


def processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": SIDE},
                                 crop_size={"height": SIDE, "width": SIDE})


def clip_input(rgb_pictures: list[np.ndarray], rules=None) -> torch.Tensor:
    """What diffusers' pipelines feed the checker: the feature extractor's pixel values."""
    images = [Image.fromarray(picture) for picture in rgb_pictures]
    return (rules or processor())(images=images, return_tensors="pt").pixel_values


# --- a tiny diffusers safety checker ----------------------------------------------------------

def random_checker() -> StableDiffusionSafetyChecker:
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 2, "vocab_size": 99, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                       "num_hidden_layers": 2, "image_size": SIDE, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(0)
    return StableDiffusionSafetyChecker(config).eval()


def embeds(checker, values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return checker.visual_projection(checker.vision_model(values)[1])


def tuned_checker(flag: np.ndarray, keep: np.ndarray, special: bool = False):
    """A checker with one concept (and with ``special`` one special-care concept) pointing
    from ``keep``'s embedding to ``flag``'s, its threshold between the two pictures' cosines:
    ``flag`` is flagged and ``keep`` is not. With ``special`` the concept threshold leaves
    ``flag`` 0.005 short, so only the special-care adjustment (+0.01) flags it."""
    checker = random_checker()
    image_embeds = embeds(checker, clip_input([flag, keep]))
    unit = torch.nn.functional.normalize(image_embeds)
    direction = (unit[0] - unit[1])[None]
    cos_flag, cos_keep = cosine_distance(image_embeds, direction)[:, 0].tolist()
    with torch.no_grad():
        checker.concept_embeds.normal_(generator=torch.Generator().manual_seed(1))
        checker.concept_embeds[5] = direction[0]
        checker.concept_embeds_weights.fill_(NEVER)
        checker.special_care_embeds_weights.fill_(NEVER)
        if special:
            checker.concept_embeds_weights[5] = cos_flag + 0.005
            checker.special_care_embeds[1] = direction[0]
            checker.special_care_embeds_weights[1] = (cos_flag + cos_keep) / 2
        else:
            checker.concept_embeds_weights[5] = (cos_flag + cos_keep) / 2
    return checker


def hub_folder(checker, folder: Path) -> Path:
    """The layout of CompVis/stable-diffusion-safety-checker: config.json, model.safetensors,
    preprocessor_config.json."""
    checker.save_pretrained(folder)
    processor().save_pretrained(folder)
    return folder


def diffusers_verdicts(checker, rgb_pictures: list[np.ndarray]) -> tuple[list, list, list]:
    """diffusers' flags from ``forward`` and ``forward_onnx``, and the largest concept score
    forward_onnx compares with 0 (computed as it computes it)."""
    values = clip_input(rgb_pictures)
    blank = np.zeros((len(rgb_pictures), 8, 8, 3), np.float32)
    _, flags = checker(values, blank.copy())
    _, onnx_flags = checker.forward_onnx(values, torch.from_numpy(blank))
    image_embeds = embeds(checker, values)
    special = cosine_distance(image_embeds, checker.special_care_embeds) \
        - checker.special_care_embeds_weights
    adjustment = torch.any(special > 0, dim=1, keepdim=True) * 0.01
    scores = (cosine_distance(image_embeds, checker.concept_embeds)
              - checker.concept_embeds_weights + adjustment).max(dim=1).values
    return list(flags), onnx_flags.tolist(), scores.tolist()


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    return pictures()


# --- the diffusers checker --------------------------------------------------------------------

def test_an_imported_checker_flags_what_diffusers_flags(tmp_path, store, scenes):
    checker = tuned_checker(scenes["warm"], scenes["cold"])
    folder = hub_folder(checker, tmp_path / "stable-diffusion-safety-checker")
    assert kinds.kind_for_source(folder, detect_format(folder)) is kind

    installed = store.import_model(folder)

    assert installed.kind == "safety_checker" and installed.name == folder.name
    assert [model.name for model in store.installed("safety_checker")] == [folder.name]
    assert kind.find_safety_checker(store) == installed.path
    shown = [scenes["warm"], scenes["cold"], scenes["disc"]]
    verdicts = check_pictures(installed.path, shown)
    flags, onnx_flags, scores = diffusers_verdicts(checker, shown)
    assert [verdict.flagged for verdict in verdicts] == flags == onnx_flags
    assert flags[:2] == [True, False]  # the test's own premise: one flagged, one not
    assert [verdict.score for verdict in verdicts] == pytest.approx(scores, abs=1e-5)


def test_the_special_care_adjustment_flags_as_in_diffusers(tmp_path, store, scenes):
    checker = tuned_checker(scenes["disc"], scenes["warm"], special=True)
    installed = store.import_model(hub_folder(checker, tmp_path / "checker"))
    shown = [scenes["disc"], scenes["warm"]]
    flags, onnx_flags, scores = diffusers_verdicts(checker, shown)
    verdicts = check_pictures(installed.path, shown)
    assert flags == onnx_flags == [verdict.flagged for verdict in verdicts] == [True, False]
    assert verdicts[0].score == pytest.approx(scores[0], abs=1e-5)
    assert 0 < verdicts[0].score < 0.01  # flagged by the adjustment alone

    with torch.no_grad():
        checker.special_care_embeds_weights.fill_(NEVER)
    assert diffusers_verdicts(checker, shown[:1])[0] == [False]  # without it, not flagged


def test_the_checker_reads_pictures_as_clip_image_processor(tmp_path, store, scenes):
    installed = store.import_model(hub_folder(random_checker(), tmp_path / "checker"))
    description = read_safety_description(installed.path)
    for name, picture in scenes.items():
        # transformers lays a transparent picture over white, as the check does.
        expected = processor()(images=[Image.fromarray(picture)], return_tensors="pt")
        ours = network_input(_rgb(picture), description)
        assert ours.shape == (1, 3, SIDE, SIDE)
        assert np.abs(ours - expected.pixel_values.numpy()).max() < 1e-5, name
    # RGBA pixels, a PIL picture and the same picture as uint8 pixels agree.
    clear = scenes["clear"]
    assert check_picture(installed.path, clear) == check_picture(
        installed.path, Image.fromarray(clear, "RGBA"))


def test_a_pipeline_folder_with_pickled_weights_is_imported_by_the_command_line(
        tmp_path, monkeypatch, capsys, scenes):
    """A pipeline's safety_checker/ (pytorch_model.bin) with feature_extractor/ beside it."""
    from desktop.cli import main

    checker = tuned_checker(scenes["cold"], scenes["warm"])
    pipeline = tmp_path / "stable-diffusion-v1-5"
    folder = pipeline / "safety_checker"
    checker.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(checker.state_dict(), folder / "pytorch_model.bin")
    processor().save_pretrained(pipeline / "feature_extractor")
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))

    assert main(["models", "import", str(folder), "--name", "checker"]) == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows["checker"] == "safety_checker"
    installed = tmp_path / "home" / "models" / "checker"
    shown = [scenes["warm"], scenes["cold"]]
    flags, _, _ = diffusers_verdicts(checker, shown)
    assert [verdict.flagged for verdict in check_pictures(installed, shown)] == flags == \
        [False, True]


# --- ONNX classifiers -------------------------------------------------------------------------

class TinyClassifier(torch.nn.Module):
    """Per-picture scores from the mean colour: class ``unsafe`` scores ``gain`` times the red
    channel's mean less the blue one's; the others a fixed mix. ``probabilities`` ends the
    graph in a softmax, as some exports do."""

    def __init__(self, classes: int = 2, unsafe: int = 1, gain: float = 4.0,
                 probabilities: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = torch.nn.Linear(3, classes)
        self.classes, self.unsafe, self.gain = classes, unsafe, gain
        self.probabilities = probabilities

    def forward(self, picture):
        colour = picture.mean(dim=(2, 3))
        logits = self.mix(colour) * 0.1
        redness = self.gain * (colour[:, 0] - colour[:, 2])
        logits = torch.cat([logits[:, :self.unsafe], redness[:, None],
                            logits[:, self.unsafe + 1:]], dim=1)
        return logits.softmax(dim=1) if self.probabilities else logits


def export_classifier(module, path: Path, side: int = 32, name: str = "logits",
                      input_name: str = "input") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module.eval(), (torch.rand(1, 3, side, side),), str(path), dynamo=False,
                      opset_version=17, input_names=[input_name], output_names=[name],
                      dynamic_axes={input_name: {0: "batch"}})
    return path


def reference_score(module, picture: np.ndarray, rules, unsafe: tuple[int, ...]) -> float:
    with torch.no_grad():
        scores = module(clip_input([picture], rules))
    if not module.probabilities:
        scores = scores.softmax(dim=1)
    return float(scores[0, list(unsafe)].sum())


def lone_graph_rules() -> CLIPImageProcessorPil:
    """How a graph without a preprocessor_config.json is read: the short side to the graph's
    32 (bilinear), the centre kept, ImageNet's mean and std."""
    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=32, resample=2,
                                 image_mean=[0.485, 0.456, 0.406],
                                 image_std=[0.229, 0.224, 0.225])


def test_a_lone_onnx_classifier_is_read_with_a_softmax_over_its_logits(tmp_path, store, scenes):
    module = TinyClassifier()
    graph = export_classifier(module, tmp_path / "nsfw_detector.onnx")
    assert kinds.kind_for_source(graph, detect_format(graph)) is kind

    installed = store.import_model(graph)

    assert installed.kind == "safety_checker"
    description = read_safety_description(installed.path)
    assert (description.network, description.activation, description.unsafe_classes) == (
        "classifier", "softmax", (1,))
    rules = lone_graph_rules()
    verdicts = {name: check_picture(installed.path, scenes[name]) for name in ("warm", "cold")}
    for name, verdict in verdicts.items():
        expected = reference_score(module, scenes[name], rules, (1,))
        assert verdict.score == pytest.approx(expected, abs=1e-5)
        assert verdict.flagged == (expected >= 0.5)
    assert verdicts["warm"].flagged and not verdicts["cold"].flagged


class ChannelsLast(torch.nn.Module):
    """A classifier taking (N, H, W, 3), as graphs converted from Keras do."""

    def __init__(self, inner: TinyClassifier) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, picture):
        return self.inner(picture.permute(0, 3, 1, 2))


def test_a_channels_last_classifier_is_fed_channels_last(tmp_path, store, scenes):
    module = TinyClassifier()
    graph = tmp_path / "keras_nsfw.onnx"
    torch.onnx.export(ChannelsLast(module).eval(), (torch.rand(1, 32, 32, 3),), str(graph),
                      dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["scores"])
    installed = store.import_model(graph)
    assert read_safety_description(installed.path).layout == "nhwc"
    rules = lone_graph_rules()
    for name in ("warm", "cold"):
        expected = reference_score(module, scenes[name], rules, (1,))
        assert check_picture(installed.path, scenes[name]).score == pytest.approx(expected,
                                                                                 abs=1e-5)


def test_a_classifier_folder_is_read_by_its_labels_and_preprocessor(tmp_path, store, scenes):
    """A Hugging Face export: model.onnx ending in a softmax, config.json naming class 0
    "nsfw", a ViT-style preprocessor_config.json (straight to 48×48, mean and std 0.5)."""
    module = TinyClassifier(classes=3, unsafe=0, probabilities=True)
    folder = tmp_path / "vit-nsfw"
    export_classifier(module, folder / "model.onnx", side=48, name="probabilities")
    (folder / "config.json").write_text(json.dumps(
        {"id2label": {"0": "nsfw", "1": "normal", "2": "drawings"}}))
    rules = transformers.ViTImageProcessorPil(size={"height": 48, "width": 48},
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3)
    rules.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a classifier\n")

    installed = store.import_model(folder)

    description = read_safety_description(installed.path)
    assert (description.activation, description.unsafe_classes, description.labels) == (
        "none", (0,), ("nsfw", "normal", "drawings"))
    assert installed.licence == "apache-2.0"
    for name in ("warm", "cold", "disc"):
        verdict = check_picture(installed.path, scenes[name])
        expected = reference_score(module, scenes[name], rules, (0,))
        assert verdict == SafetyVerdict(expected >= 0.5, pytest.approx(expected, abs=1e-5))


# --- bad input --------------------------------------------------------------------------------

def test_a_damaged_checker_folder_is_refused_in_one_sentence(tmp_path, store):
    folder = hub_folder(random_checker(), tmp_path / "checker")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-200])  # cut short
    with pytest.raises(ModelError) as refused:
        store.import_model(folder)
    assert "is not a valid .safetensors file" in one_sentence(refused)
    weights.unlink()
    with pytest.raises(ModelError) as refused:
        store.import_model(folder)
    assert "has no weights file" in one_sentence(refused)
    assert store.installed() == [] and list(store.root.iterdir()) == []


def test_a_checker_missing_weights_is_refused_not_filled_at_random(tmp_path, store):
    from safetensors.torch import load_file, save_file

    folder = hub_folder(random_checker(), tmp_path / "checker")
    tensors = load_file(folder / "model.safetensors")
    del tensors["concept_embeds"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError) as refused:
        store.import_model(folder)
    assert "lacks 1 of its weights" in one_sentence(refused)


def test_graphs_that_are_not_classifiers_are_refused_in_one_sentence(tmp_path, store):
    class TwoInputs(torch.nn.Module):
        def forward(self, picture, strength):
            return picture.mean(dim=(2, 3)) * strength

    graph = tmp_path / "two.onnx"
    torch.onnx.export(TwoInputs(), (torch.rand(1, 3, 8, 8), torch.ones(1, 1)), str(graph),
                      dynamo=False, opset_version=17, input_names=["picture", "strength"],
                      output_names=["scores"])
    assert not kind.recognises(graph, detect_format(graph))
    with pytest.raises(ModelError) as refused:
        store.import_model(graph, kind="safety_checker")
    assert one_sentence(refused) == "'two.onnx' is not a safety checker."

    five = export_classifier(TinyClassifier(classes=5), tmp_path / "five.onnx")
    with pytest.raises(ModelError) as refused:
        store.import_model(five)
    assert "cannot tell which of the 5 classes" in one_sentence(refused)

    folder = tmp_path / "no-unsafe"
    export_classifier(TinyClassifier(), folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "cat", "1": "dog"}}))
    with pytest.raises(ModelError) as refused:
        store.import_model(folder)
    assert "names unsafe content" in one_sentence(refused)
    assert list(store.root.iterdir()) == []


def test_a_damaged_installed_checker_or_a_bad_picture_is_one_sentence(tmp_path, store, scenes):
    installed = store.import_model(export_classifier(TinyClassifier(), tmp_path / "c.onnx"))
    with pytest.raises(BadRequest) as refused:
        check_picture(installed.path, scenes["warm"].astype(np.float32))
    assert "8-bit RGB" in one_sentence(refused)
    with pytest.raises(BadRequest) as refused:
        check_picture(installed.path, np.zeros((4, 4, 3), np.uint8))
    one_sentence(refused)

    description = installed.path / "easel.json"
    data = json.loads(description.read_text())
    description.write_text(json.dumps({**data, "preprocessing": {"size": [0, 0]}}))
    with pytest.raises(ModelError) as refused:
        check_picture(installed.path, scenes["warm"])
    assert one_sentence(refused) == "The description of safety checker 'c' is damaged."
    assert store.installed("safety_checker") == []  # listing skips it, as every kind's


# --- other kinds keep their own ---------------------------------------------------------------

def test_upscalers_segmenters_face_detectors_and_encoders_are_not_taken(tmp_path):
    from tests.test_annotators import TinyUpscaler
    from tests.test_background import TinySegmenter, export
    from tests.test_faces import FACES, export_yunet, yunet_outputs

    upscaler = tmp_path / "4x-tiny.onnx"
    torch.onnx.export(TinyUpscaler().eval(), (torch.rand(1, 3, 16, 16),), str(upscaler),
                      dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["output"])
    segmenter = export(TinySegmenter(7), tmp_path / "u2net.onnx", 320)
    yunet = export_yunet(tmp_path / "yunet", yunet_outputs(FACES))
    encoder = export_classifier(TinyClassifier(classes=4), tmp_path / "encoder.onnx",
                                name="image_embeds", input_name="pixel_values")
    expected = {upscaler: "upscaler", segmenter: "segmenter", yunet: "face_detector",
                encoder: "image_encoder"}
    for graph, kind_name in expected.items():
        assert not kind.recognises(graph, detect_format(graph)), graph.name
        assert kinds.kind_for_source(graph, detect_format(graph)).name == kind_name


def test_a_checker_weights_file_alone_is_this_kind_but_needs_its_config(tmp_path, store):
    folder = hub_folder(random_checker(), tmp_path / "checker")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(folder / "model.safetensors", alone / "safety_checker.safetensors")
    source = alone / "safety_checker.safetensors"
    assert kinds.kind_for_source(source, detect_format(source)) is kind
    with pytest.raises(ModelError) as refused:
        store.import_model(source)
    assert "needs the config.json of its safety checker" in one_sentence(refused)
    installed = store.import_model(folder / "model.safetensors", name="beside")
    assert installed.kind == "safety_checker"
