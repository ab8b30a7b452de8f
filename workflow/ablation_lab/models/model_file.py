"""A researcher's own Keras model file (`model.kind: file`): read, checked and rebuilt per variant.

A `.keras` file is a zip archive whose `config.json` describes every layer. The study reads
that description without TensorFlow (the Snakefile is parsed at every start and must stay
cheap), so a file that is not a Keras model, a layer holding Python code, an input shape or
class count that does not fit the data, or a family that has nothing to act on is refused
in one line naming the file and the layer before any job runs. The training job then loads
the file with `safe_mode=True` (no code is ever deserialised) and, for retrain variants,
clones its architecture with fresh weights: activations swapped in the layers that have one,
Dropout rates changed, Dropout inserted after the layers `model.dropout_after` names.
"""

from __future__ import annotations

import functools
import json
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablation_lab.artifacts import file_digest
from ablation_lab.config import schema_absent
from ablation_lab.messages import brief, listing
from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS, learnable_settings
from ablation_lab.specs import ModelSpec

CODE_LAYERS = ("Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer")
NESTED_MODELS = ("Sequential", "Functional", "Model")
WEIGHTS = ("retrain", "as_saved")
OWN_LAYERS_PREFIX = "ablation_lab>"  # layers this package registers (learnable activations, NSDropout)
NO_ACTIVATION = (None, "linear")
MAX_CONFIG_JSON_BYTES = 16 * 2**20  # a large model's config.json is a few MB; a zip bomb inflates to GBs
SAFE_MODE_ADVICE = (
    "safe mode refuses to load Python code from a file: rebuild the model from built-in Keras layers, "
    "or write a builder (model.kind: builder, see config/README.md)"
)


class ModelFileError(ValueError):
    """A model file that cannot be used, in one line naming the file (and the layer)."""


@dataclass(frozen=True)
class FileLayer:
    """One layer as `config.json` describes it."""

    name: str
    kind: str  # the Keras class name: Dense, Conv2D, Dropout, Activation, ...
    activation: str | None
    units: int | None  # Dense units or conv filters
    rate: float | None  # Dropout rate
    inbound: tuple[str, ...]


@dataclass(frozen=True)
class ModelFile:
    """What the workflow must know about a model file before any job runs."""

    path: str
    sha256: str
    input_shape: tuple[int | None, ...]
    layers: tuple[FileLayer, ...]  # saved order, the input layer left out
    output: str  # the output layer's name

    def layer(self, name: str) -> FileLayer:
        return next(layer for layer in self.layers if layer.name == name)

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def _output_chain(self) -> list[str]:
        """The output layer and the layers that only turn its logits into probabilities."""
        chain, layer = [self.output], self.layer(self.output)
        while layer.kind in ("Softmax", "Activation", "Dropout") and len(layer.inbound) == 1 and layer.inbound[0] in self.names():
            layer = self.layer(layer.inbound[0])
            chain.append(layer.name)
            if layer.units is not None:
                break
        return chain

    def output_units(self) -> int | None:
        """How many values the model outputs, when the description says so (Dense units or conv filters)."""
        return next((self.layer(name).units for name in self._output_chain() if self.layer(name).units is not None), None)

    def output_activation(self) -> str | None:
        layer = self.layer(self.output)
        return "softmax" if layer.kind == "Softmax" else layer.activation

    def activation_layers(self) -> list[str]:
        """The hidden layers whose activation an activation swap replaces (the output's softmax is kept)."""
        head = set(self._output_chain())
        return [
            layer.name
            for layer in self.layers
            if layer.name not in head and layer.activation not in NO_ACTIVATION and layer.activation != "softmax"
        ]

    def knockout_layers(self) -> list[str]:
        """What post-hoc knockout can remove units of: the activation layers and, in a graph, the
        weighted layers a merge (Add, Concatenate) takes: a residual branch's write (surgery.knockout_layers)."""
        if self.chain_break() is None:
            return self.activation_layers()
        merged = {name for layer in self.layers if layer.kind in ("Add", "Concatenate") for name in layer.inbound}
        weighted = [layer.name for layer in self.layers if layer.name in merged and layer.units is not None and layer.name != self.output]
        return [name for name in self.names() if name in set(self.activation_layers()) | set(weighted)]

    def chain_break(self) -> str | None:
        """None for a chain (each layer takes the previous one's output), else the first layer that does not, in words."""
        for index, layer in enumerate(self.layers):
            expected = (self.layers[index - 1].name,) if index else layer.inbound[:1]
            if layer.inbound != expected:
                takes = ", ".join(repr(name) for name in layer.inbound) or "nothing"
                return f"layer {layer.name!r} takes {takes}" + (f", not {expected[0]!r} alone" if expected else "")
        return None

    def hidden_names(self) -> list[str]:
        """Every layer but the output (where Dropout may be inserted)."""
        return [name for name in self.names() if name != self.output]

    def dropout_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kind == "Dropout"]


def _where(path: str | Path) -> str:
    return f"model.path: {str(path)!r}"


def _activation_name(value: Any, where: str, layer: str) -> str | None:
    """A layer's activation as a name; a serialised custom function is code, refused."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and str(value.get("module", "")).startswith("keras") and isinstance(value.get("config"), str):
        return value["config"]
    raise ModelFileError(f"{where}: layer {layer!r} has a custom activation function; {SAFE_MODE_ADVICE}")


def _inbound(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the layers a functional layer is called on (`keras_history` of its arguments)."""
    names: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
            if history:
                names.append(history[0])
            else:
                for item in value.values():
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(entry.get("inbound_nodes", []))
    return tuple(dict.fromkeys(names))


def _foreign_object(value: Any, depth: int = 0) -> str | None:
    """What in a layer's config Keras's safe mode or this workflow would refuse, if anything.

    A serialised object from outside Keras (a custom initializer, regularizer or constraint), a
    lambda's code, or a URL (a layer that would fetch a file while loading): each is refused
    at plan time, not when a job loads the file.
    """
    if depth > 64:
        return "a configuration nested too deeply to be a Keras layer's"
    if isinstance(value, str):
        return f"a URL ({brief(value)}): the workflow never downloads; save the model with the values in it" if "://" in value else None
    if isinstance(value, list):
        return next((found for item in value if (found := _foreign_object(item, depth + 1))), None)
    if not isinstance(value, Mapping):
        return None
    if value.get("class_name") in ("__lambda__", "function") or "code" in value:
        return f"Python code; {SAFE_MODE_ADVICE}"
    registered = value.get("registered_name")
    module = str(value.get("module", "keras"))
    if "class_name" in value and ((registered and not str(registered).startswith(OWN_LAYERS_PREFIX)) or not module.startswith("keras")):
        return f"a custom object {brief(registered or value.get('module'))}; {SAFE_MODE_ADVICE}"
    return next((found for item in value.values() if (found := _foreign_object(item, depth + 1))), None)


def _integer_setting(config: Mapping[str, Any], key: str, where: str, name: str) -> int | None:
    value = config.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ModelFileError(f"{where}: layer {name!r} has {key} {brief(value)} of type {type(value).__name__}, not an integer")
    return value


def _layer(entry: Mapping[str, Any], previous: str | None, where: str) -> FileLayer:
    kind, config = entry.get("class_name", "?"), entry.get("config", {})
    name = config.get("name") or entry.get("name") or "?"
    if kind in CODE_LAYERS:
        raise ModelFileError(f"{where}: layer {name!r} is a {kind} layer (Python code); {SAFE_MODE_ADVICE}")
    if kind in NESTED_MODELS:
        raise ModelFileError(f"{where}: layer {name!r} is a nested model ({kind}); save the model with its layers inlined")
    registered = entry.get("registered_name")
    if (registered and not str(registered).startswith(OWN_LAYERS_PREFIX)) or not str(entry.get("module", "keras")).startswith("keras"):
        raise ModelFileError(f"{where}: layer {name!r} is a custom class ({registered or entry.get('module')}); {SAFE_MODE_ADVICE}")
    activation = _activation_name(config.get("activation"), where, name)
    foreign = _foreign_object(config)
    if foreign:
        raise ModelFileError(f"{where}: layer {name!r} holds {foreign}")
    units = _integer_setting(config, "units" if "units" in config else "filters", where, name)
    inbound = _inbound(entry) if "inbound_nodes" in entry else ((previous,) if previous else ())
    return FileLayer(name, kind, activation, units, config.get("rate"), inbound)


def _read_config(path: Path, where: str) -> dict[str, Any]:
    if not path.exists():
        raise ModelFileError(f"{where}: no such file (give the path of a .keras file saved with model.save)")
    if path.is_dir():
        raise ModelFileError(f"{where}: is a folder, not a .keras file")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ModelFileError(f"{where}: is not a regular file (a pipe, device or socket), not a .keras file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise ModelFileError(f"{where}: not a Keras model file (a .keras archive holds config.json; this one holds {names[:5]})")
            if archive.getinfo("config.json").file_size > MAX_CONFIG_JSON_BYTES:
                raise ModelFileError(f"{where}: its config.json inflates past the limit of {MAX_CONFIG_JSON_BYTES // 2**20} MiB")
            with archive.open("config.json") as member:  # reads at most the declared size
                config = json.loads(member.read(MAX_CONFIG_JSON_BYTES + 1))
    except RecursionError:
        raise ModelFileError(f"{where}: its config.json is nested too deeply to be a Keras model") from None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{where}: not a Keras model file (.keras archive saved with model.save): {error}") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"{where}: not a Keras model file (its config.json describes no model)")
    return config


def _input_shape(layers: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> tuple[int | None, ...] | None:
    for entry in layers:
        if entry.get("class_name") == "InputLayer":
            shape = entry.get("config", {}).get("batch_shape") or entry.get("config", {}).get("batch_input_shape")
            return tuple(shape[1:]) if shape else None
    shape = config.get("build_input_shape")
    return tuple(shape[1:]) if shape else None


def _endpoints(value: Any) -> list[str]:
    """Layer names of a functional config's `input_layers`/`output_layers` (one is saved unnested)."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [value[0]]
    return [entry[0] for entry in value]


@functools.lru_cache(maxsize=32)
def _inspect(path: str, _mtime_ns: int, _size: int) -> ModelFile:
    where = _where(path)
    top = _read_config(Path(path), where)
    kind, config = top["class_name"], top.get("config", {})
    if kind not in ("Sequential", "Functional"):
        raise ModelFileError(
            f"{where}: the model is a subclassed model (class {kind}); save a Sequential or Functional model, "
            "or write a builder (model.kind: builder)"
        )
    entries = config.get("layers", [])
    inputs, outputs = _endpoints(config.get("input_layers")), _endpoints(config.get("output_layers"))
    if kind == "Functional" and (len(inputs) != 1 or len(outputs) != 1):
        raise ModelFileError(f"{where}: the model must have one input and one output (inputs: {len(inputs)}, outputs: {len(outputs)})")  # fmt: skip
    layers: list[FileLayer] = []
    for entry in entries:
        if entry.get("class_name") == "InputLayer":
            continue
        layers.append(_layer(entry, layers[-1].name if layers else None, where))
    if not layers:
        raise ModelFileError(f"{where}: the model has no layers")
    shape = _input_shape(entries, config)
    if shape is None:
        raise ModelFileError(f"{where}: the model's input shape is not saved (build the model on a keras.Input before saving)")
    output = outputs[0] if kind == "Functional" else layers[-1].name
    return ModelFile(path, file_digest(path), shape, tuple(layers), output)


def inspect_model_file(path: str | Path) -> ModelFile:
    """Read a model file's description (cached while the file is unchanged); never imports TensorFlow."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        return _inspect(str(file), 0, -1)  # fails with the missing-file line
    return _inspect(str(file), stat.st_mtime_ns, stat.st_size)


def fits(model_shape: Sequence[int | None], data_shape: Sequence[int]) -> bool:
    """Whether a model's input shape (None: any size) takes the dataset's inputs."""
    return len(model_shape) == len(data_shape) and all(m is None or m == d for m, d in zip(model_shape, data_shape, strict=True))


def check_fits_data(model: ModelFile, input_shape: Sequence[int], n_classes: int | None) -> None:
    """The model must take the dataset's inputs and output one probability per class."""
    where = _where(model.path)
    expected = tuple(input_shape)
    if not fits(model.input_shape, expected):
        raise ModelFileError(
            f"{where}: the model takes inputs of shape {list(model.input_shape)}, the dataset's inputs have shape {list(expected)}"
            + (
                " (start the model with keras.Input(shape) of the dataset's shape and a Reshape layer)"
                if model.input_shape != expected
                else ""
            )
        )
    if model.output_activation() != "softmax":
        raise ModelFileError(
            f"{where}: output layer {model.output!r} has activation {model.output_activation()!r}; "
            "the model must output one probability per class (end it with a softmax)"
        )
    units = model.output_units()
    if n_classes is not None and units is not None and units != n_classes:
        raise ModelFileError(
            f"{where}: output layer {model.output!r} gives {units} probabilities; the dataset has {n_classes} classes (expected {n_classes})"
        )


def check_family(model: ModelFile, family: str, model_cfg: Mapping[str, Any]) -> None:
    """Refuse a family that has nothing to act on in this model, naming what is missing."""
    where = _where(model.path)
    if family == "activation" and not model.activation_layers():
        raise ModelFileError(
            f"families.activation: {where} has no hidden layer with an activation to swap (its layers: {listing(model.names())})"
        )
    if family == "dropout" and not model.dropout_layers() and not model_cfg.get("dropout_after"):
        raise ModelFileError(
            f"families.dropout: {where} has no Dropout layer; name the layers to follow with one in model.dropout_after "
            f"(its layers: {listing(model.names())})"
        )
    if family in ("capacity", "nsdropout"):
        raise ModelFileError(
            f"families.{family}: does not apply to model.kind: file (its architecture comes from {model.path!r}); "
            "remove the family, or use model.kind mlp or cnn"
        )


def check_dropout_after(model: ModelFile, names: Sequence[str]) -> None:
    known = model.hidden_names()
    for index, name in enumerate(names):
        if name not in known:
            raise ModelFileError(
                f"model.dropout_after[{index}]: {name!r} is not a hidden layer of {model.path!r} (its hidden layers: {', '.join(known)})"
            )


def canonical_file_model(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A file model's spec with the file's digest, keeping only overrides that change the model.

    Swapping in the activation every target layer already has, or setting the rate every
    Dropout layer already has, is the file's own model: such variants share its run.
    `weights: as_saved` holds only for the file's own model: any override retrains.
    """
    info = inspect_model_file(model_cfg["path"])
    out: dict[str, Any] = {"kind": "file", "path": str(model_cfg["path"]), "sha256": info.sha256}
    activation = model_cfg.get("activation")
    if activation is not None and any(info.layer(name).activation != activation for name in info.activation_layers()):
        out["activation"] = activation
        if activation in LEARNABLE_ACTIVATIONS:  # its settings (the defaults: kind file takes no model.learnable) are part of the run
            out["learnable"] = learnable_settings(model_cfg)
    rate, after = model_cfg.get("dropout"), list(model_cfg.get("dropout_after") or [])
    if rate is not None:
        changes_existing = any(info.layer(name).rate != float(rate) for name in info.dropout_layers())
        if float(rate) and after:
            out["dropout_after"] = after
        if changes_existing or out.get("dropout_after"):
            out["dropout"] = rate
    retrains = model_cfg.get("weights", schema_absent("model")["weights"]) == "retrain" or any(
        key in out for key in ("activation", "dropout")
    )
    out["weights"] = "retrain" if retrains else "as_saved"
    return out


def describe_file_model(model: Mapping[str, Any]) -> str:
    """`file-<stem>[-<activation>][-drop<r>][-saved]` for a run folder's readable part."""
    name = f"file-{Path(model['path']).stem}"
    if model.get("activation"):
        name += f"-{model['activation']}"
    if model.get("dropout") is not None:
        name += f"-drop{float(model['dropout']):g}"
    return name + ("-saved" if model.get("weights") == "as_saved" else "")


def model_source(model_cfg: Mapping[str, Any]) -> dict[str, str] | None:
    """Where a model file's or builder's model comes from, with the content digest its runs were keyed by."""
    if model_cfg.get("kind") == "file":
        path = str(model_cfg["path"])
        return {
            "kind": "file",
            "path": path,
            "sha256": file_digest(path),
            "weights": model_cfg.get("weights", schema_absent("model")["weights"]),
        }
    if model_cfg.get("kind") == "builder":
        from ablation_lab.models.builders import builder_file

        path = str(builder_file(model_cfg["builder"]).relative_to(Path(__file__).parents[3]))
        return {"kind": "builder", "path": path, "sha256": file_digest(builder_file(model_cfg["builder"]))}
    return None


# --- the TensorFlow side: used by the training job only -------------------------------------


def load_model_file(path: str) -> Any:
    """Load the file with safe_mode; a refusal becomes one line naming the file."""
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many kinds; every one is the file's fault
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFileError(f"{_where(path)}: Keras cannot load it with safe_mode=True: {text}") from None


def check_loaded(model: Any, path: str, input_shape: Sequence[int], n_classes: int) -> None:
    """The loaded model's real shapes (the description may omit some)."""
    got = tuple(model.input_shape[1:])
    if not fits(got, input_shape):
        raise ModelFileError(f"{_where(path)}: the model takes inputs of shape {list(got)}, the dataset's inputs have shape {list(input_shape)}")  # fmt: skip
    if tuple(model.output_shape[1:]) != (n_classes,):
        raise ModelFileError(
            f"{_where(path)}: the model outputs shape {list(model.output_shape[1:])}; expected one probability per class ({n_classes})"
        )


def build_file_model(model: ModelSpec | Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> Any:
    """The file's model (`as_saved`), or its architecture with fresh weights and the variant's changes."""
    import keras

    from ablation_lab.models.layers import learnable_activation

    spec = ModelSpec.of(model)
    path = str(spec.path)
    saved = load_model_file(path)
    check_loaded(saved, path, input_shape, n_classes)
    if spec.weights == "as_saved":
        return saved
    info = inspect_model_file(path)
    swap = spec.activation
    targets = set(info.activation_layers()) if swap else set()
    learnable = swap in LEARNABLE_ACTIVATIONS
    rate = spec.dropout
    after = set(spec.dropout_after or ())

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name in targets:
            config["activation"] = "linear" if learnable else swap
        if isinstance(layer, keras.layers.Dropout) and rate is not None:
            config["rate"] = float(rate)
        return layer.__class__.from_config(config)  # new weights, drawn from the seeded initialisers

    def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if layer.name in targets and learnable:
            out = learnable_activation(swap, spec.learnable, f"{layer.name}_{swap}".replace("-", "_"))(out)
        if layer.name in after and rate:
            out = keras.layers.Dropout(float(rate), name=f"{layer.name}_dropout")(out)
        return out

    functional = keras.Model(saved.inputs, saved.outputs, name=saved.name) if isinstance(saved, keras.Sequential) else saved
    return keras.models.clone_model(functional, clone_function=clone_layer, call_function=call_layer)
