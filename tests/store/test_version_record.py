"""record_from_row: the one row-to-record mapper (lineage sorted the same way for every reader)."""

from __future__ import annotations

from assay.store.version_record import NO_STATE, record_from_row


def test_lineage_is_sorted_by_name_then_numeric_version():
    record = record_from_row(
        "model",
        "churn",
        "3",
        uri="models:/churn/3",
        manifest_root="sha256:ab",
        created_at=None,
        state=("known-good", "complete", "ok", None, "run1", "src", '["robust"]'),
        key_id="k1",
        lineage=[
            ("customers", "10", "trained-on"),
            ("base", "2", "fine-tuned-from"),
            ("customers", "9", "trained-on"),
            ("accounts", "1", "trained-on"),
            ("base", "11", "fine-tuned-from"),
        ],
    )
    assert record.datasets == ["accounts@1", "customers@9", "customers@10"]
    assert record.parents == ["base/2", "base/11"]
    assert (record.state, record.labels, record.ref) == (
        "known-good",
        ["robust"],
        "models:/churn/3",
    )


def test_no_state_row_reads_as_registered_and_complete():
    record = record_from_row(
        "dataset",
        "d",
        None,
        uri=None,
        manifest_root=None,
        created_at=None,
        state=None,
        key_id=None,
        lineage=[],
    )
    assert (record.state, record.status, record.labels, record.version) == (
        NO_STATE[0],
        NO_STATE[1],
        [],
        "",
    )
