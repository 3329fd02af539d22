"""Face restoration: restorers (GFPGAN, RestoreFormer, CodeFormer exported to ONNX) and a face
detector (YuNet), run with onnxruntime and numpy; engine.faces.restore is the entry point."""

from engine.faces.description import (
    FACE_DETECTOR,
    FACE_RESTORER,
    FaceDetectorDescription,
    FaceRestorerDescription,
)
from engine.faces.restore import Box, check_boxes, find_faces, restore_faces

__all__ = ["FACE_DETECTOR", "FACE_RESTORER", "Box", "FaceDetectorDescription",
           "FaceRestorerDescription", "check_boxes", "find_faces", "restore_faces"]
