"""SMART on FHIR dashboard for IEC-HS (SMART App Launch 2.x, served under /smart)."""
