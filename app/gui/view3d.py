"""view3d.py
==========
The 3D view: meshes (shaded, per-object colour and visibility, wireframe) and cross-section contours (coloured by
label), in the input's world frame. pyqtgraph's OpenGL view: it renders under Xvfb with Mesa's llvmpipe (measured in
``../shared/docs/gui_testing.md``); VTK was not checked there yet.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph.opengl as gl
from pyqtgraph.opengl import shaders
from PySide6.QtGui import QVector3D

# Colours by object index (label order): distinct under the default lighting.
PALETTE = [(0.90, 0.62, 0.35), (0.36, 0.62, 0.90), (0.55, 0.80, 0.40), (0.85, 0.40, 0.55), (0.65, 0.50, 0.85),
           (0.95, 0.85, 0.35), (0.40, 0.80, 0.80), (0.75, 0.75, 0.75)]


# A headlight from the viewer, lit on both sides, with a little ambient: pyqtgraph's "shaded" lights from behind
# the object (light (1, -1, -1) in eye space), which leaves surfaces that face the viewer nearly black.
# pyqtgraph compiles a program once per ShaderProgram object, and each view has an OpenGL context of its own (not
# shared), so every view registers its own copy (a program compiled in another context is invalid there).
_HEADLIGHT = [
    shaders.VertexShader("""
        uniform mat4 u_mvp;
        uniform mat3 u_normal;
        attribute vec4 a_position;
        attribute vec3 a_normal;
        attribute vec4 a_color;
        varying vec4 v_color;
        varying vec3 v_normal;
        void main() {
            v_normal = normalize(u_normal * a_normal);
            v_color = a_color;
            gl_Position = u_mvp * a_position;
        }
    """),
    shaders.FragmentShader("""
        #ifdef GL_ES
        precision mediump float;
        #endif
        varying vec4 v_color;
        varying vec3 v_normal;
        void main() {
            vec3 n = normalize(v_normal);
            float head = abs(n.z);
            float key = max(dot(n, normalize(vec3(-0.4, 0.6, 0.7))), 0.0);
            vec3 rgb = v_color.rgb * (0.22 + 0.58 * head + 0.25 * key);
            gl_FragColor = vec4(min(rgb, vec3(1.0)), v_color.a);
        }
    """),
]


def colour(index: int, alpha: float = 1.0) -> tuple[float, float, float, float]:
    return (*PALETTE[index % len(PALETTE)], alpha)


def distance_colours(distance: np.ndarray, scale: float) -> np.ndarray:
    """(V, 4) colours of per-vertex distances: blue (0) through white to red (``scale`` and beyond)."""
    t = np.clip(np.asarray(distance, dtype=np.float64) / max(scale, 1e-12), 0.0, 1.0)[:, None]
    blue, white, red = np.array([0.23, 0.40, 0.85]), np.array([0.95, 0.95, 0.95]), np.array([0.85, 0.20, 0.18])
    rgb = np.where(t < 0.5, blue + (white - blue) * (2 * t), white + (red - white) * (2 * t - 1))
    return np.concatenate([rgb, np.ones_like(t)], axis=1)


class View3D(gl.GLViewWidget):
    """Named items (``show_mesh(name, mesh)``, ``show_contours(name, cs)``) over a neutral background; the camera
    frames everything shown."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackgroundColor((38, 41, 46))
        self.items_by_name: dict[str, list] = {}
        self.wireframe = False
        self.shader = f"fieldstudio_headlight_{id(self)}"
        shaders.ShaderProgram(self.shader, [type(s)(s.code) for s in _HEADLIGHT])  # fresh, uncompiled copies

    def clear_all(self) -> None:
        for name in list(self.items_by_name):
            self.remove(name)

    def remove(self, name: str) -> None:
        for item in self.items_by_name.pop(name, []):
            self.removeItem(item)

    def set_visible(self, name: str, visible: bool) -> None:
        for item in self.items_by_name.get(name, []):
            item.setVisible(visible)

    def show_mesh(self, name: str, mesh, index: int = 0, alpha: float = 1.0, frame: bool = True,
                  vertex_colors: np.ndarray | None = None) -> None:
        """A trimesh in world coordinates, smooth-shaded in the object's colour, or in ``vertex_colors`` ((V, 4)
        floats, e.g. a distance colour map); replaces ``name``."""
        self.remove(name)
        data = gl.MeshData(vertexes=np.asarray(mesh.vertices, np.float32), faces=np.asarray(mesh.faces, np.int32),
                           vertexColors=None if vertex_colors is None else np.asarray(vertex_colors, np.float32))
        item = gl.GLMeshItem(meshdata=data, smooth=True, shader=self.shader, color=colour(index, alpha),
                             drawEdges=self.wireframe, edgeColor=(0.1, 0.1, 0.1, 1.0),
                             glOptions="opaque" if alpha >= 1 else "translucent")
        self.addItem(item)
        self.items_by_name[name] = [item]
        if frame:
            self.frame(np.asarray(mesh.bounds))

    def show_contours(self, name: str, cs, labels: list[int] | None = None) -> None:
        """Every loop of a ``CrossSections`` as closed lines, coloured by its label's place in ``labels``. One line
        item per label (segment pairs): a label map's thousands of loops as separate items made every repaint in
        software OpenGL slow enough to take time from training."""
        self.remove(name)
        labels = labels or cs.labels()
        segments: dict[int, list[np.ndarray]] = {}
        for plane in cs.planes:
            for loop in plane.loops:
                a = loop.points
                pairs = np.stack([a, np.roll(a, -1, axis=0)], axis=1).reshape(-1, 3)
                segments.setdefault(labels.index(loop.label) if loop.label in labels else 0, []).append(pairs)
        items = []
        for index, parts in segments.items():
            item = gl.GLLinePlotItem(pos=np.concatenate(parts).astype(np.float32), color=colour(index), width=2.0,
                                     antialias=True, mode="lines")
            self.addItem(item)
            items.append(item)
        self.items_by_name[name] = items
        vertices = cs.all_vertices()
        if len(vertices):
            self.frame(np.array([vertices.min(axis=0), vertices.max(axis=0)]))

    def set_wireframe(self, on: bool) -> None:
        self.wireframe = on
        for items in self.items_by_name.values():
            for item in items:
                if isinstance(item, gl.GLMeshItem):
                    item.opts["drawEdges"] = on
                    item.update()

    def frame(self, bounds: np.ndarray) -> None:
        """Look at the box ``bounds`` (2, 3) from a three-quarter view."""
        centre = bounds.mean(axis=0)
        size = float(np.linalg.norm(bounds[1] - bounds[0]))
        self.setCameraPosition(pos=QVector3D(*map(float, centre)), distance=1.6 * max(size, 1e-6),
                               elevation=25, azimuth=-60)
