"""Generated videos for the extraction benchmarks: coloured rectangles moving over noise.

The benchmarks time and measure the pipeline, not the features, so any decodable video of the
right size and length will do; generating it keeps the benches free of downloads.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path, seconds: float, size: tuple[int, int], fps: int = 25, seed: int = 0
) -> None:
    """Writes an MPEG-4 clip of ``seconds`` at ``fps``, frames of ``size`` (height, width)."""
    rng = np.random.default_rng(seed)
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            frame = background.copy()
            for k in range(3):
                x = (i * (3 + k) + 40 * k) % max(1, width - width // 4)
                y = (height // 5) * (k + 1) % max(1, height - height // 4)
                frame[y : y + height // 4, x : x + width // 4] = (60 + 60 * k, 200 - 50 * k, 90)
            image = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
