"""view3d.py
==========
The 3D view: meshes (shaded, per-object colour and visibility, wireframe) and cross-section contours (coloured by
label), in the input's world frame, with an optional clipping plane (``View3D.set_clip``; ``ClipControls`` drives it).
pyqtgraph's OpenGL view: it renders under Xvfb with Mesa's llvmpipe (measured in ``../shared/docs/gui_testing.md``);
VTK through pyvista/pyvistaqt was measured against it in ``docs/vtk_evaluation.md``.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph.opengl as gl
from pyqtgraph.opengl import shaders
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QOpenGLContext, QVector3D
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QWidget

# Colours by object index (label order): distinct under the default lighting.
PALETTE = [(0.90, 0.62, 0.35), (0.36, 0.62, 0.90), (0.55, 0.80, 0.40), (0.85, 0.40, 0.55), (0.65, 0.50, 0.85),
           (0.95, 0.85, 0.35), (0.40, 0.80, 0.80), (0.75, 0.75, 0.75)]


# A headlight from the viewer, lit on both sides, with a little ambient: pyqtgraph's "shaded" lights from behind
# the object (light (1, -1, -1) in eye space), which leaves surfaces that face the viewer nearly black.
# pyqtgraph compiles a program once per ShaderProgram object, and each view has an OpenGL context of its own (not
# shared), so every view registers its own copy (a program compiled in another context is invalid there).
# The clipping plane is the uniform u_clip = (normal, offset): fragments with dot(normal, world) > offset are dropped.
# Mesh vertices are given in world coordinates and mesh items have no transform, so a_position is the world position.
# pyqtgraph loads a program's uniform data (ShaderProgram[name] = floats) with glUniform1fv at every draw, so changing
# it takes effect at the next repaint; (0, 0, 0, 1) clips nothing.
_NO_CLIP = [0.0, 0.0, 0.0, 1.0]
_HEADLIGHT = [
    shaders.VertexShader("""
        uniform mat4 u_mvp;
        uniform mat3 u_normal;
        attribute vec4 a_position;
        attribute vec3 a_normal;
        attribute vec4 a_color;
        varying vec4 v_color;
        varying vec3 v_normal;
        varying vec3 v_world;
        void main() {
            v_normal = normalize(u_normal * a_normal);
            v_color = a_color;
            v_world = a_position.xyz;
            gl_Position = u_mvp * a_position;
        }
    """),
    shaders.FragmentShader("""
        #ifdef GL_ES
        #ifdef GL_FRAGMENT_PRECISION_HIGH
        precision highp float;
        #else
        precision mediump float;
        #endif
        #endif
        uniform float u_clip[4];
        varying vec4 v_color;
        varying vec3 v_normal;
        varying vec3 v_world;
        void main() {
            if (dot(vec3(u_clip[0], u_clip[1], u_clip[2]), v_world) > u_clip[3]) discard;
            vec3 n = normalize(v_normal);
            float head = abs(n.z);
            float key = max(dot(n, normalize(vec3(-0.4, 0.6, 0.7))), 0.0);
            vec3 rgb = v_color.rgb * (0.22 + 0.58 * head + 0.25 * key);
            gl_FragColor = vec4(min(rgb, vec3(1.0)), v_color.a);
        }
    """),
]


THREE_QUARTER = (25.0, -60.0)  # the camera's elevation and azimuth (degrees) for shapes without a patient frame


def colour(index: int, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """The palette's colours first; beyond them, hues a golden angle apart (a label map with 41 labels gets 41
    colours, not the palette's 8 five times over), alternating in brightness."""
    if index < len(PALETTE):
        return (*PALETTE[index], alpha)
    import colorsys

    hue = (0.08 + 0.618034 * index) % 1.0
    return (*colorsys.hsv_to_rgb(hue, 0.55, 0.92 if index % 2 else 0.72), alpha)


def distance_colours(distance: np.ndarray, scale: float) -> np.ndarray:
    """(V, 4) colours of per-vertex distances: blue (0) through white to red (``scale`` and beyond)."""
    t = np.clip(np.asarray(distance, dtype=np.float64) / max(scale, 1e-12), 0.0, 1.0)[:, None]
    blue, white, red = np.array([0.23, 0.40, 0.85]), np.array([0.95, 0.95, 0.95]), np.array([0.85, 0.20, 0.18])
    rgb = np.where(t < 0.5, blue + (white - blue) * (2 * t), white + (red - white) * (2 * t - 1))
    return np.concatenate([rgb, np.ones_like(t)], axis=1)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 unit normals, the area-weighted mean of the faces around each vertex. pyqtgraph computes
    them in a Python loop over vertices at the first paint (1.4 s for a 340k-face result on 2 cores, the window
    frozen meanwhile); this is vectorised (about 0.05 s)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = twice the area: the weight
    normals = np.stack([np.bincount(f.reshape(-1), weights=np.repeat(face_n[:, k], 3), minlength=len(v))
                        for k in range(3)], axis=1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


class LineItem(gl.GLLinePlotItem):
    """pyqtgraph's line item with its shader program cached per OpenGL context: pyqtgraph caches one program for the
    class, but a program belongs to the context it was compiled in, so a second view (a second window in one
    process: tests, benchmarks) drew no lines ("GLError invalid value, glUseProgram")."""

    _programs: dict = {}

    def getShaderProgram(self):
        context = QOpenGLContext.currentContext()
        key = id(context)
        if key not in LineItem._programs:
            gl.GLLinePlotItem._shaderProgram = None  # pyqtgraph compiles one in the current context ...
            LineItem._programs[key] = gl.GLLinePlotItem.getShaderProgram()
            gl.GLLinePlotItem._shaderProgram = None  # ... which is kept here, by context, not for the class
            context.aboutToBeDestroyed.connect(lambda: LineItem._programs.pop(key, None))
        return LineItem._programs[key]


def clip_segments(segments: np.ndarray, axis: int, position: float, flip: bool = False) -> np.ndarray:
    """The parts of line segments ((N, 2, 3), or (2N, 3) point pairs; same shape back with M <= N) on the kept side
    of the plane x[axis] = position: x[axis] <= position, or >= with ``flip``. A crossing segment ends on the plane."""
    pairs = np.asarray(segments).reshape(-1, 2, 3)
    side = pairs[:, :, axis] - position  # > 0: the hidden side
    if flip:
        side = -side
    hidden = side > 0
    keep = ~(hidden[:, 0] & hidden[:, 1])
    pairs, side, hidden = pairs[keep].copy(), side[keep], hidden[keep]
    for end in (0, 1):  # move the hidden end of a crossing segment onto the plane
        rows = hidden[:, end]
        a, b = pairs[rows, end], pairs[rows, 1 - end]
        t = side[rows, end] / (side[rows, end] - side[rows, 1 - end])
        point = a + (b - a) * t[:, None]
        point[:, axis] = position
        pairs[rows, end] = point
    return pairs.reshape(-1, 2, 3) if np.asarray(segments).ndim == 3 else pairs.reshape(-1, 3)


class View3D(gl.GLViewWidget):
    """Named items (``show_mesh(name, mesh)``, ``show_contours(name, cs)``) over a neutral background; the camera
    frames everything shown. ``set_clip`` cuts everything by an axis-aligned plane: meshes in the fragment shader,
    lines (contours, and mesh edges in wireframe) on the CPU."""

    contents_changed = Signal()  # items shown, removed, shown or hidden: what clip_range spans may have changed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackgroundColor((38, 41, 46))
        self.items_by_name: dict[str, list] = {}
        self.wireframe = False
        self.clip: tuple[int, float, bool] | None = None  # (axis, position, flip)
        self.angles = THREE_QUARTER  # camera elevation, azimuth (degrees) when framing
        self.shader = f"fieldstudio_headlight_{id(self)}"
        self.program = shaders.ShaderProgram(self.shader, [type(s)(s.code) for s in _HEADLIGHT],  # fresh copies
                                             uniforms={"u_clip": list(_NO_CLIP)})

    def clear_all(self) -> None:
        for name in list(self.items_by_name):
            self.remove(name)

    def remove(self, name: str) -> None:
        items = self.items_by_name.pop(name, [])
        for item in items:
            self.removeItem(item)
        if items:
            self.contents_changed.emit()

    def set_visible(self, name: str, visible: bool) -> None:
        for item in self.items_by_name.get(name, []):
            item.setVisible(visible)
        self.contents_changed.emit()

    def show_mesh(self, name: str, mesh, index: int = 0, alpha: float = 1.0, frame: bool = True,
                  vertex_colors: np.ndarray | None = None) -> None:
        """A trimesh in world coordinates, smooth-shaded in the object's colour, or in ``vertex_colors`` ((V, 4)
        floats, e.g. a distance colour map); replaces ``name``."""
        self.remove(name)
        data = gl.MeshData(vertexes=np.asarray(mesh.vertices, np.float32), faces=np.asarray(mesh.faces, np.int32),
                           vertexColors=None if vertex_colors is None else np.asarray(vertex_colors, np.float32))
        normals = mesh.metadata.get("vertex_normals")  # computed ahead, off the window's thread, when it could be
        if normals is None or len(normals) != len(mesh.vertices):
            normals = vertex_normals(mesh.vertices, mesh.faces)
        data._vertexNormals = normals  # MeshData's own cache, filled here
        item = gl.GLMeshItem(meshdata=data, smooth=True, shader=self.shader, color=colour(index, alpha),
                             drawEdges=self.wireframe, edgeColor=(0.1, 0.1, 0.1, 1.0),
                             glOptions="opaque" if alpha >= 1 else "translucent")
        item.world_bounds = np.asarray(mesh.bounds, np.float64)
        item.edge_lines = None  # wireframe edges as a line item, drawn instead of the mesh's own while clipping
        self.addItem(item)
        self.items_by_name[name] = [item]
        self._clip_edges(item)
        if frame:
            self.frame(np.asarray(mesh.bounds))
        self.contents_changed.emit()

    def show_contours(self, name: str, cs, labels: list[int] | None = None, frame: bool = True) -> None:
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
            pos = np.concatenate(parts).astype(np.float32)
            item = LineItem(pos=pos, color=colour(index), width=2.0, antialias=True, mode="lines")
            item.full_pos = pos  # what clipping cuts from
            item.world_bounds = np.array([pos.min(axis=0), pos.max(axis=0)], np.float64)
            self._clip_lines(item)
            self.addItem(item)
            items.append(item)
        self.items_by_name[name] = items
        vertices = cs.all_vertices()
        if frame and len(vertices):
            self.frame(np.array([vertices.min(axis=0), vertices.max(axis=0)]))
        self.contents_changed.emit()

    def set_colour(self, name: str, rgba: tuple[float, float, float, float]) -> None:
        """One colour (floats 0-1) for the meshes and lines of ``name`` (a distance colouring is replaced)."""
        for item in self.items_by_name.get(name, []):
            if isinstance(item, gl.GLMeshItem):
                data = item.opts["meshdata"]
                if data is not None and data.hasVertexColor():  # the same mesh without its per-vertex colours
                    plain = gl.MeshData(vertexes=data.vertexes(), faces=data.faces())
                    plain._vertexNormals = data.vertexNormals()
                    item.setMeshData(meshdata=plain)
                item.setColor(rgba)
            elif isinstance(item, gl.GLLinePlotItem):
                item.setData(color=rgba)

    def set_wireframe(self, on: bool) -> None:
        self.wireframe = on
        for item in self._all_items():
            if isinstance(item, gl.GLMeshItem):
                self._clip_edges(item)
                item.update()

    def set_clip(self, axis: int | None, position: float = 0.0, flip: bool = False) -> None:
        """Cut everything shown by the world plane x[axis] = position, hiding the side x[axis] > position (x[axis] <
        position with ``flip``); ``axis=None`` shows everything again. Items shown later are cut too."""
        if axis is None:
            self.clip = None
            self.program["u_clip"] = list(_NO_CLIP)
        else:
            axis, position, sign = int(axis), float(position), -1.0 if flip else 1.0
            if axis not in (0, 1, 2):
                raise ValueError(f"clip axis must be 0, 1, 2 or None, not {axis}")
            self.clip = (axis, position, bool(flip))
            normal = [0.0, 0.0, 0.0]
            normal[axis] = sign
            self.program["u_clip"] = [*normal, sign * position]
        for item in self._all_items():
            if isinstance(item, gl.GLMeshItem):
                self._clip_edges(item)
            elif isinstance(item, gl.GLLinePlotItem):
                self._clip_lines(item)
        self.update()

    def clip_range(self, axis: int) -> tuple[float, float]:
        """(lo, hi): the world extent along ``axis`` of every visible item (uncut), or of every item when none is
        visible; (0.0, 0.0) when nothing is shown."""
        items = [item for item in self._all_items() if getattr(item, "world_bounds", None) is not None]
        visible = [item for item in items if item.visible()] or items
        if not visible:
            return 0.0, 0.0
        return (float(min(item.world_bounds[0, axis] for item in visible)),
                float(max(item.world_bounds[1, axis] for item in visible)))

    def _all_items(self):
        return [item for items in self.items_by_name.values() for item in items]

    def _clip_lines(self, item) -> None:
        pos = item.full_pos if self.clip is None else clip_segments(item.full_pos, *self.clip)
        if len(pos):
            item.setData(pos=pos)
        else:  # GLLinePlotItem draws nothing without positions (an empty buffer cannot be uploaded)
            item.pos = None
            item.update()

    def _clip_edges(self, item) -> None:
        """A mesh's wireframe: pyqtgraph draws a mesh's edges with its own shared shader, which knows no clipping,
        so while clipping the edges are a child line item cut on the CPU instead."""
        cut = self.wireframe and self.clip is not None
        item.opts["drawEdges"] = self.wireframe and not cut
        if item.opts["drawEdges"] and item.vertexes is not None and item.edges is None:
            item.meshDataChanged()  # pyqtgraph makes the edge buffers only when it parses the mesh with edges on
        if cut:
            if item.edge_lines is None:
                data = item.opts["meshdata"]
                faces = np.asarray(data.faces(), np.int64)
                pairs = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
                edges = np.asarray(data.vertexes(), np.float32)[np.unique(pairs, axis=0)].reshape(-1, 3)
                item.edge_lines = LineItem(parentItem=item, pos=edges, color=item.opts["edgeColor"],
                                                    width=1.0, mode="lines", glOptions="opaque")
                item.edge_lines.full_pos = edges
            self._clip_lines(item.edge_lines)
        if item.edge_lines is not None:
            item.edge_lines.setVisible(cut)

    def frame(self, bounds: np.ndarray) -> None:
        """Look at the box ``bounds`` (2, 3) from ``self.angles`` (elevation, azimuth in degrees)."""
        centre = bounds.mean(axis=0)
        size = float(np.linalg.norm(bounds[1] - bounds[0]))
        elevation, azimuth = self.angles
        self.setCameraPosition(pos=QVector3D(*map(float, centre)), distance=1.3 * max(size, 1e-6),
                               elevation=elevation, azimuth=azimuth)

    def face_patient(self, world: str) -> None:
        """Frame later items from the patient's front, head up, the patient's right on the screen's left (as
        3D Slicer's anterior view): the camera on the anterior side (+y in RAS, -y in LPS), z up."""
        self.angles = (10.0, 90.0 if world == "RAS" else -90.0)


class ClipControls(QWidget):
    """Axis (off / x / y / z), a slider over the view's ``clip_range`` (0..1000) and a flip box, driving
    ``view.set_clip``. The slider keeps its place (a fraction of the range) when the view's contents change."""

    AXES = ("off", "x", "y", "z")

    def __init__(self, view: View3D, parent=None):
        super().__init__(parent)
        self.view = view
        self.axis = QComboBox()
        self.axis.addItems(self.AXES)
        self.axis.setToolTip("Clip the 3D view by a plane across this axis")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 1000)
        self.slider.setValue(500)
        self.slider.setToolTip("Where the plane cuts, across everything shown")
        self.flip = QCheckBox("flip")
        self.flip.setToolTip("Hide the other side of the plane")
        self.where = QLabel()
        self.where.setMinimumWidth(70)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Clip"))
        for widget in (self.axis, self.slider, self.flip, self.where):
            layout.addWidget(widget)
        layout.setStretch(2, 1)
        self.axis.currentIndexChanged.connect(self.apply)
        self.slider.valueChanged.connect(self.apply)
        self.flip.toggled.connect(self.apply)
        view.contents_changed.connect(self.apply)
        self.apply()

    def apply(self, *_) -> None:
        """Set the view's plane from the controls."""
        axis = self.axis.currentIndex() - 1
        on = axis >= 0
        self.slider.setEnabled(on)
        self.flip.setEnabled(on)
        if not on:
            if self.view.clip is not None:
                self.view.set_clip(None)
            self.where.setText("")
            return
        lo, hi = self.view.clip_range(axis)
        position = lo + (hi - lo) * self.slider.value() / 1000.0
        if self.view.clip != (axis, position, self.flip.isChecked()):
            self.view.set_clip(axis, position, self.flip.isChecked())
        self.where.setText(f"{self.AXES[axis + 1]} = {position:.4g}")
