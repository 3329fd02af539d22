"""Provenance: what every picture Easel saves says about how it was made — Content
Credentials (C2PA), the XMP source type and, when the user wants it, an invisible watermark."""
