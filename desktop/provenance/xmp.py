"""The XMP packet that says "made by a trained model" to readers that know XMP but not C2PA
(IPTC's ``Iptc4xmpExt:DigitalSourceType``), kept in the PNG's ``XML:com.adobe.xmp`` text chunk,
where Adobe's tools, exiftool and Pillow look for it."""

from __future__ import annotations

KEY = "XML:com.adobe.xmp"


def xmp_packet(digital_source_type: str) -> str:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{digital_source_type}"/>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="r"?>')


def digital_source_type(packet: str) -> str | None:
    """The source type a packet of ours (or one written the same way) names."""
    marker = 'Iptc4xmpExt:DigitalSourceType="'
    start = packet.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = packet.find('"', start)
    return packet[start:end] if end > start else None
