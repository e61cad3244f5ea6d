"""Device commands: ``edge-vl predict``, ``info`` and ``bench`` (torch-free unless ``bench
--compare torch``), and ``keygen``/``sign`` for signed bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_vl.cli.options import min_release_option, trusted_key_option


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path), required=False)
@click.argument("text", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="OpenVINO inference threads.")
@click.option(
    "--top", type=click.IntRange(min=1), default=5, show_default=True, help="Scores to list (text output)."
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Answer many rows instead of IMAGE: a JSONL/CSV manifest (image, text) or a folder of images "
    "(each asked --text); streamed, answers in input order.",
)
@click.option(
    "--text",
    "question",
    default=None,
    help="With --data FOLDER: the question asked about every image.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --data: write the answers to this JSONL (or .csv) file instead of stdout; refused if it "
    "exists, written whole or not at all.",
)
@trusted_key_option
@min_release_option
@click.pass_context
def predict(
    ctx, bundle, image, text, as_json, threads, top, data, question, out, trusted_keys, min_release
) -> None:
    """Answer TEXT about IMAGE with BUNDLE (runs on OpenVINO, no torch needed), or every row of
    --data. Bundles with a prompt head (CLIP --prompts) classify the image alone and take no TEXT."""
    from edge_vl.runtime.predictor import Predictor

    if data is not None:
        if image is not None:
            raise click.UsageError("give IMAGE [TEXT] or --data, not both")
        from edge_vl.cli.operations import batch_predict

        keys = list(trusted_keys) or None
        predictor = Predictor(
            bundle, threads=threads, trusted_keys=keys, min_release=min_release, performance_hint="throughput"
        )
        failed = batch_predict(predictor, data, out, question)
        if failed:
            click.echo(f"error: {failed} row(s) could not be read (their error is in the results)", err=True)
            ctx.exit(1)
        return
    if image is None:
        raise click.UsageError("give IMAGE (and TEXT), or --data ROWS")
    keys = list(trusted_keys) or None
    predictor = Predictor(bundle, threads=threads, trusted_keys=keys, min_release=min_release)
    if text is None and predictor.text_encoder is not None:
        raise click.UsageError("this bundle answers a question about the image: give TEXT after IMAGE")
    if text is not None and predictor.text_encoder is None:
        raise click.UsageError("this bundle classifies images alone (a prompt head): leave TEXT out")
    prediction = predictor.predict(image, text)
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
        return
    sure = " (not sure: check it)" if prediction.abstained else ""
    click.echo(f"{prediction.label}\t{prediction.score:.4f}{sure}")
    for label, score in sorted(prediction.scores.items(), key=lambda kv: -kv[1])[:top]:
        click.echo(f"  {score:.4f}  {label}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@trusted_key_option
@min_release_option
def info(bundle, as_json, trusted_keys, min_release) -> None:
    """Describe BUNDLE (verifying every file's hash and, with trusted keys, its signature) and this
    host's CPU."""
    from edge_vl.bundle import read_bundle
    from edge_vl.runtime.cpu import cpu_flags, cpu_name
    from edge_vl.runtime.profiles import active_profile, installed_openvino
    from edge_vl.signing import describe_signature

    b = read_bundle(bundle, trusted_keys=list(trusted_keys) or None, min_release=min_release)
    m = b.manifest
    flags = cpu_flags()
    host = {
        "cpu": cpu_name(),
        "flags": flags,
        "runtime_profile": active_profile().name,
        "openvino": installed_openvino(),
    }
    claimed = describe_signature(b.path)
    signature = {"signed": claimed is not None, "checked": b.signature is not None, **(claimed or {})}
    if as_json:
        click.echo(
            json.dumps(
                {"manifest": b.data, "host": host, "signed_by": b.signed_by, "signature": signature}, indent=2
            )
        )
        return
    arch, model, metrics = m.architecture, m.model, m.metrics
    latency = metrics.latency_ms
    where_built = (
        f"{latency.retained:.2f} ms at batch 1 where built "
        f"({latency.full:.2f} ms for the {latency.full_model})"
        if latency
        else "not recorded"
    )
    rows = [
        ("bundle", f"{b.path} (format {m.format_version}, edge-vl {m.edge_vl_version}, built {m.created})"),
        ("signature", _signature_line(signature)),
        ("model", f"{arch.family} ({arch.model_type}) from {arch.source}"),
        ("skipped layers", f"{list(arch.skipped) or 'none'} of {len(arch.layers)}"),
        ("precision", model.precision),
        ("inputs", ", ".join(f"{i.name} {list(i.shape)} {i.dtype}" for i in model.inputs)),
        ("texts", folded_line(model.folded_texts)),
        ("labels", f"{len(m.labels)} ({m.head.kind}): {', '.join(m.labels)}"),
        ("eval accuracy", f"{metrics.eval_accuracy:.4f} on {metrics.eval_examples} rows"),
        ("MACs retained", f"{m.cost.retained_fraction:.1%} of the full model"),
        ("latency", where_built),
        ("runtimes", ", ".join(m.runtime.profiles)),
        ("host cpu", host["cpu"]),
        ("host isa", " ".join(k for k, v in flags.items() if v) or "none of the listed"),
        ("host runtime", f"{host['runtime_profile']} (OpenVINO {host['openvino']})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def folded_line(folded) -> str:
    """What ``edge-vl info`` says about the texts a bundle takes."""
    if folded is None:
        return "any (the bundle runs its text tower, if it takes text)"
    return "only " + "; ".join(repr(t) for t in folded.texts) + " (folded into the graph)"


@click.command()
@click.option(
    "--out",
    "private_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file to create (PEM, readable by you only); the public key goes next to it "
    "with '.pub' appended.",
)
def keygen(private_key) -> None:
    """Make an Ed25519 key pair for signing bundles (keep the private key on the build machine,
    copy the .pub file to devices)."""
    from edge_vl.signing import generate_key

    public = private_key.with_name(private_key.name + ".pub")
    try:
        kid = generate_key(private_key, public)
    except FileExistsError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"private key  {private_key}\npublic key   {public}\nkey id       {kid}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "private_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private key from `edge-vl keygen`.",
)
@click.option(
    "--release",
    type=click.IntRange(min=1),
    default=None,
    help="Release number signed with the bundle; devices refuse lower ones than they were given or "
    "have accepted [default: the build time, YYYYMMDDHHMMSS UTC].",
)
def sign(bundle, private_key, release) -> None:
    """Sign BUNDLE (after checking every file's hash): devices given the public key accept it."""
    from edge_vl.bundle import read_bundle
    from edge_vl.signing import TrustPolicy, sign_bundle

    read_bundle(bundle, trust=TrustPolicy())  # every file's hash: sign only what is intact
    signature = sign_bundle(bundle, private_key, release=release)
    click.echo(f"signed {bundle} with key {signature.key_id}, release {signature.release}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--threads", type=click.IntRange(min=1), default=None, help="OpenVINO inference threads.")
@click.option(
    "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Inputs per inference."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds of measurement, split between the latency and the throughput phase.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--target-profile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also measure FP32 vs INT8 speed on a reference graph and save everything (machine, ISA, "
    "runtime profile, speeds) to this JSON file: the target profile `edge-vl build --target-profile` reads.",
)
@click.option(
    "--profile", "target_profile_alias", type=click.Path(dir_okay=False, path_type=Path), hidden=True
)
@click.option(
    "--compare",
    type=click.Choice(["torch"]),
    default=None,
    help="Also time the retained and the full model in torch eager and the full model on OpenVINO, "
    "interleaved with the bundle at batch 1, and print the bundle's speed-up (needs the build extra).",
)
@click.option(
    "--runs", type=click.IntRange(min=3), default=30, show_default=True, help="Rounds of --compare."
)
@click.option(
    "--model",
    "model_dir",
    default=None,
    help="Checkpoint (directory or shipped name) --compare rebuilds the torch models from "
    "[default: the bundle's source].",
)
def bench(
    bundle, threads, batch, duration, as_json, target_profile, target_profile_alias, compare, runs, model_dir
) -> None:
    """Measure BUNDLE on this machine: cold start, latency p50/p90/p99, throughput, peak memory."""
    from edge_vl.bench import benchmark

    profile = target_profile or target_profile_alias
    report = benchmark(bundle, threads=threads, batch=batch, duration=duration)
    if compare:
        from edge_vl.training.compare import compare_with_torch

        report["compare"] = compare_with_torch(bundle, runs=runs, threads=threads, source=model_dir)
    if profile is not None:
        from edge_vl.bench import target_profile
        from edge_vl.fileio import write_json_atomic

        report = target_profile(report, threads=threads)
        write_json_atomic(profile, report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    lat, thr, machine = report["latency_ms"], report["throughput"], report["machine"]
    flags = " ".join(k for k, v in machine["flags"].items() if v) or "none"
    click.echo(f"cpu           {machine['cpu']}  ({machine['cores']} cores; {flags})")
    click.echo(f"openvino      {machine['openvino']}")
    click.echo(
        f"precision     bundle {report['precision']}, OpenVINO computes in {report['inference_precision']}"
    )
    click.echo(f"cold start    {report['cold_start_ms']:.1f} ms (verify + compile + first inference)")
    click.echo(
        f"latency (ms)  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
        f"at batch {report['batch']} over {lat['iterations']} runs"
    )
    click.echo(
        f"throughput    {thr['samples_per_s']:.1f} samples/s ({thr['inferences_per_s']:.1f} inferences/s, "
        f"{thr['requests']} async requests)"
    )
    click.echo(f"peak memory   {report['peak_rss_mb']:.0f} MB resident")
    if compare:
        cmp = report["compare"]
        click.echo(f"compared at batch 1, median of {cmp['runs']} interleaved rounds (ms; bundle speed-up):")
        for name, lat in cmp["latency_ms"].items():
            ratio = cmp["speedup_of_bundle"].get(name)
            shown = "the bundle" if ratio is None else f"{ratio:.2f}x"
            spread = f"p10 {lat['p10']:.2f}, p90 {lat['p90']:.2f}"
            click.echo(f"  {name:<18} {lat['median']:8.2f}  ({spread})  {shown}")
        click.echo(f"  note: {cmp['note']}")


def _signature_line(signature: dict) -> str:
    """``edge-vl info``'s signature row: signed or not, by which key, which release, checked or not."""
    if not signature["signed"]:
        return "unsigned"
    if "error" in signature:
        return f"unreadable ({signature['error']})"
    checked = "checked" if signature["checked"] else "not checked: give --trusted-key or EDGE_VL_TRUSTED_KEYS"
    return f"key {signature['key_id']}, release {signature['release']} ({checked})"
