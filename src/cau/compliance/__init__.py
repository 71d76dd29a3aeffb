"""Compliance (VMM's workflow): baselines, compliance scans, exemptions and remediation, over the
store's documents and the plug-ins' scans. The rules themselves are pure (cau.domain.compliance)."""
