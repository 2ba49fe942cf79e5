"""Camera streams stored as MP4 video through PyAV, as LeRobot v3.0 stores them.

A video feature's frames live in ``videos/<key>/chunk-XXX/file-XXX.mp4``; an episode is the
span [from_timestamp, to_timestamp) of one file (LeRobot concatenates episodes into one file,
our writer gives each episode its own). Frame i of a stream has presentation time i / fps
exactly: the stream's time base is a multiple of 1/fps, so timestamps survive the round trip.

Encoding follows LeRobot's defaults where it has them (AV1 through SVT-AV1, yuv420p, a key
frame every 2 frames so a seek decodes at most one extra frame, CRF 30); H.264 through x264 is
the widely decodable alternative. Decoding is sequential within a file (each file decoded once
when episodes are read in order) and seeks to the preceding key frame otherwise.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

# name -> (encoder, options); g=2: a key frame every other frame, LeRobot's choice for random access.
CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "av1": ("libsvtav1", {"crf": "30", "g": "2", "preset": "8"}),
    "h264": ("libx264", {"crf": "23", "g": "2", "preset": "veryfast"}),
}
PIX_FMT = "yuv420p"
TOLERANCE_S = 1e-4  # LeRobot's timestamp tolerance: a frame at t matches a query within it


def require_av():
    try:
        import av
    except ImportError as e:
        raise ImportError(f"video storage needs PyAV: pip install 'vlaforge[video]' ({e})") from None
    return av


def check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"video codec must be one of {sorted(CODECS)}, got {codec!r}")


def feature_info(codec: str, height: int, width: int, fps: int) -> dict:
    """The ``info`` block LeRobot keeps beside a video feature in meta/info.json."""
    return {"video.height": height, "video.width": width, "video.codec": codec,
            "video.pix_fmt": PIX_FMT, "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
            "has_audio": False}


def encode(frames: np.ndarray, fps: int, codec: str) -> bytes:
    """MP4 bytes of ``frames`` (T, H, W, 3) uint8 RGB, frame i at time i / fps."""
    check_codec(codec)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"video frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"video frames need even height and width ({PIX_FMT}), got {h}x{w}")
    av = require_av()
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr at level 3
    encoder, options = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, PIX_FMT
        stream.options = dict(options)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def rgb(frame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, converted on this thread: ``to_ndarray(format=)``
    starts a swscale thread pool per call (9-22 ms per 64 px frame against 0.1-0.4 ms)."""
    return frame.reformat(format="rgb24", threads=1).to_ndarray()


class VideoReader:
    """Frames of one MP4 file by timestamp. Reading spans in increasing time decodes the file
    once, front to back; an earlier timestamp seeks back to the key frame before it."""

    def __init__(self, path: str | os.PathLike, threads: int = 1) -> None:
        """``threads``: decoder threads. One by default: at robot-camera sizes (64-128 px) the
        decoder's thread start-up and hand-offs cost more than the frames (64 px AV1: 109 ms
        per 14-frame file with FFmpeg's default threads, 3.5 ms with one); loaders parallelise
        across files instead."""
        av = require_av()
        self.path = Path(path)
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise ValueError(f"cannot open video {self.path}: {e}") from None
        self.stream = self.container.streams.video[0]
        self.stream.codec_context.thread_count = threads
        if threads == 1:
            self.stream.thread_type = "NONE"
        self.decodes = 0  # frames decoded so far: what a test counts to see each file decoded once
        self._frames = None  # the decoder's frame iterator, started by the first read
        self._pending = None  # the first frame not yet handed out (decoded past the last span)
        self._consumed = float("-inf")  # time of the last frame handed out

    def _restart(self, t: float) -> None:
        offset = int(max(t, 0.0) / self.stream.time_base)
        self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
        self._frames, self._pending, self._consumed = self.container.decode(self.stream), None, float("-inf")

    def _next(self):
        frame, self._pending = self._pending, None
        if frame is None:
            frame = next(self._frames, None)
            self.decodes += frame is not None
        return frame

    def span(self, t0: float, t1: float) -> np.ndarray:
        """Every frame with t0 <= time < t1 (within TOLERANCE_S): (T, H, W, 3) uint8."""
        passed = self._pending.time > t0 + TOLERANCE_S if self._pending is not None else self._consumed >= t0 - TOLERANCE_S
        if self._frames is None or passed:
            self._restart(t0)
        out = []
        while (frame := self._next()) is not None:
            if frame.time >= t1 - TOLERANCE_S:
                self._pending = frame
                break
            self._consumed = frame.time
            if frame.time >= t0 - TOLERANCE_S:
                out.append(rgb(frame))
        if not out:
            raise ValueError(f"video {self.path} has no frames in [{t0:.4f}, {t1:.4f}) s")
        return np.stack(out)

    def at(self, timestamps: list[float]) -> np.ndarray:
        """The frames shown at ``timestamps`` (any order): (len, H, W, 3) uint8; an error names
        a timestamp with no frame within TOLERANCE_S."""
        order = np.argsort(timestamps, kind="stable")
        out: list[np.ndarray | None] = [None] * len(timestamps)
        for i in order:
            t = float(timestamps[i])
            frames = self.span(t, t + 2 * TOLERANCE_S)
            out[i] = frames[0]
        return np.stack(out)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
