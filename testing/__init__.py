"""``assay.testing``: supported fakes for tests and demos (:mod:`assay.testing.fakes`)."""
