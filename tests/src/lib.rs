//! Conformance suite shared helpers. Cases arrive with the export issue.
