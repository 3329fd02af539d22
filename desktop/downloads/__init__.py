"""Downloads for Easel's model catalogue: Hugging Face repo files and direct addresses through
one byte path (``transfer.fetch``), so resume, cancel, progress and checksums behave alike.

Nothing here touches the network until ``download_files`` or ``fetch`` is called, and
huggingface_hub is imported only for a Hugging Face file.
"""

from desktop.downloads.download import FileToFetch, download_files, sha256_of
from desktop.downloads.errors import DownloadCancelled, DownloadError
from desktop.downloads.space import check_free_space
from desktop.downloads.transfer import DownloadProgress, fetch, partial_path

__all__ = [
    "DownloadCancelled", "DownloadError", "DownloadProgress", "FileToFetch",
    "check_free_space", "download_files", "fetch", "partial_path", "sha256_of",
]
