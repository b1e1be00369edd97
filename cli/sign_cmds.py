"""`assay sign` and `assay verify`."""

from __future__ import annotations

from pathlib import Path

import click

from assay.cli.common import esc, ignore_path_option, open_registry, short, signature_option
from assay.cli.context import AppContext, json_option
from assay.cli.progress import byte_progress


@click.command("sign")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key",
    "key_ref",
    help="Key id, id prefix, name or PEM path (default: ASSAY_KEY, else the default key).",
)
@signature_option("Where to write the bundle (default: PATH/model.sig, or PATH.sig for a file).")
@click.option(
    "--reuse-digests",
    is_flag=True,
    help="Reuse cached digests of files whose inode, size and times are unchanged; in a "
    "changed file, of the shards whose bytes are unchanged (told by a fingerprint re-read).",
)
@ignore_path_option
@click.option(
    "--hash",
    "hash_type",
    type=click.Choice(["sha256", "blake2b", "blake3"]),
    help="Digest algorithm (default: sha256 with --shard-size, else the policy's signing "
    "default, else sha256).",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    help="OMS shard serialization: hash every file in pieces of this many bytes, in parallel "
    "(not with blake3). Without --hash and --shard-size the policy's signing default applies.",
)
@json_option
@click.pass_obj
def sign(
    app: AppContext,
    path: Path,
    key_ref,
    signature,
    reuse_digests: bool,
    ignore_paths: tuple[str, ...],
    hash_type: str | None,
    shard_size: int | None,
    as_json: bool,
) -> None:
    """Hash every file under PATH and write an OMS v1.0 signature bundle.

    Modes: sha256, blake2b or blake3 per file, or sha256/blake2b per shard with --shard-size.
    model_signing 1.1.1's library verifies them all (blake2b only given its hashing config);
    its CLI verifies sha256 files only.
    """
    # Only the hashing modules before the hash starts: signing, keys and the store load while
    # it runs.
    from assay.core.errors import ConfigError
    from assay.integrity.manifest import default_signature_path, inner_ignores
    from assay.integrity.prehash import check_mode, requested_mode, start_manifest

    mode = requested_mode(hash_type, shard_size)
    try:
        check_mode(*(mode or ("sha256", None)))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    sig_path = signature or default_signature_path(path)
    ignores = (*ignore_paths, *inner_ignores(path, sig_path))
    with byte_progress(f"hashing {path.name}", enabled=None if not as_json else False) as advance:
        # Hash while the store opens: the flags' mode, else the built-in default (the policy's
        # signing default, read from the store, replaces it only when it differs).
        cache = None
        if reuse_digests:
            from assay.integrity.digest_cache import DigestCache

            cache = DigestCache.for_home(app.settings.home)
        want = mode or ("sha256", None)
        prehash = start_manifest(
            path,
            ignore_paths=ignores,
            hash_type=want[0],
            shard_size=want[1],
            cache=cache,
            progress=advance,
        )
        options = dict(
            key=key_ref,
            signature=signature,
            reuse_digests=reuse_digests,
            ignore_paths=ignore_paths,
            progress=advance,
            hash_type=hash_type,
            shard_size=shard_size,
            prehash=prehash,
        )
        from assay.store.sqlite_readonly import sqlite_path

        db_path = sqlite_path(app.settings.db_url)
        try:
            if db_path is not None:
                # The default SQLite store: the same rows through stdlib sqlite3, no SQLAlchemy.
                from assay.registry.sign_sqlite import sign_path_sqlite

                result = sign_path_sqlite(app.settings, db_path, path, **options)
            else:
                result = open_registry(app).sign_path(path, **options)
        except BaseException:
            prehash.cancel()  # a refused or failed sign stops hashing in the background too
            raise
    app.emit(
        result.to_dict(),
        as_json,
        lambda c: c.print(
            f"signed {result.files} files ({result.total_bytes:,} bytes, "
            f"{esc(result.serialization)}) of {esc(path)} with key {short(result.key_id, 16)} "
            f"-> {esc(result.signature_path)}"
        ),
    )


@click.command("verify")
@click.argument("target")
@signature_option("The bundle (default: PATH/model.sig, or PATH.sig for a file).")
@click.option(
    "--trust-cache",
    is_flag=True,
    help="Use cached digests of unchanged files instead of re-hashing (faster, weaker).",
)
@ignore_path_option
@json_option
@click.pass_obj
def verify(
    app: AppContext,
    target: str,
    signature,
    trust_cache: bool,
    ignore_paths: tuple[str, ...],
    as_json: bool,
) -> None:
    """Re-hash TARGET and check its signature against trusted keys.

    TARGET is a local file or folder, a registered model version (models:/NAME/V or
    models:/NAME@ALIAS) or dataset version (dataset:NAME@V), re-read from the artifact store.
    Exit code 3 when anything differs: the report names every modified, missing and extra file.
    """
    from assay.core.errors import IntegrityError
    from assay.registry.uri_verify import verify_target_or_path

    try:
        with byte_progress("verifying", enabled=None if not as_json else False) as advance:
            report = verify_target_or_path(
                app.settings,
                target,
                signature=signature,
                trust_cache=trust_cache,
                ignore_paths=ignore_paths,
                progress=advance,
            )
    except IntegrityError as exc:
        # An unsigned target or an unreadable/corrupt bundle is a failed verification: CI
        # reading --json gets a report (ok: false) as for any other failure, then exit 3.
        if as_json:
            from assay.trust.verification import VerifyReport

            failed = VerifyReport(subject=target, ok=False, problems=[str(exc)])
            app.emit(failed.to_dict(), True, lambda console: None)
        raise
    app.emit(report.to_dict(), as_json, lambda c: render_report(c, report))
    report.raise_for_failure()


def render_report(console, report) -> None:
    """Print a verification report: one verdict line, then every difference.

    Paths, file names, key names and problems come from untrusted input (a bundle's key hint, the
    names of files in a suspect folder): they are printed with rich markup escaped.
    """
    if report.ok:
        console.print(
            f"[green]OK[/green] {esc(report.subject)}: {report.files} files match, "
            f"signed by {esc(report.key_name or short(report.key_id, 16))}"
        )
        return
    console.print(f"[red]FAILED[/red] {esc(report.subject)}")
    for problem in report.problems:
        console.print(f"  {esc(problem)}")
    for label, names in (
        ("modified", report.modified),
        ("missing", report.missing),
        ("extra", report.extra),
    ):
        for name in names:
            console.print(f"  {label:9} {esc(name)}")
