"""A minimal TFLite flatbuffer writer on top of the ``tflite`` package's generated schema builders.

The model is collected in Python (tensors, constant buffers, operators) and serialized once by
:meth:`ModelBuilder.serialize`. It follows the TFLite schema (``tensorflow/lite/schema/schema.fbs``):
buffer 0 is the empty sentinel, every constant tensor owns one buffer, and operator codes above 127
store ``PLACEHOLDER_FOR_GREATER_OP_CODES`` (127) in ``deprecated_builtin_code`` with the real code in
``builtin_code``, as the schema's comment requires.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
import tflite
from flatbuffers import flexbuffers
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

__all__ = ["ModelBuilder", "flex_map", "ACTIVATION", "PADDING"]

_DTYPES = {
    np.dtype(np.float32): TensorType.FLOAT32,
    np.dtype(np.int32): TensorType.INT32,
    np.dtype(np.int64): TensorType.INT64,
}
#: tflite.ActivationFunctionType / tflite.Padding values by name.
ACTIVATION = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
PADDING = {"SAME": 0, "VALID": 1}


def flex_map(values: dict[str, int | str]) -> bytes:
    """A flexbuffer map of ints/strings: the custom-options encoding LCE's kernels read
    (``flexbuffers::GetRoot(buffer).AsMap()`` in ``larq_compute_engine/tflite/kernels/*.cc``)."""
    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key in sorted(values):  # flexbuffer maps are sorted by key anyway
            value = values[key]
            if isinstance(value, str):
                fbb.String(key, value)
            else:
                fbb.Int(key, int(value))
    return bytes(fbb.Finish())


@dataclass
class _Tensor:
    shape: tuple[int, ...]
    dtype: int
    name: str
    buffer: int = 0


@dataclass
class _Op:
    code: int  # index into opcodes
    inputs: list[int]
    outputs: list[int]
    options_type: int = 0
    options: tuple[str, dict[str, Any]] | None = None
    custom: bytes | None = None


@dataclass
class ModelBuilder:
    """Collects one subgraph; ``serialize()`` returns the ``.tflite`` bytes."""

    tensors: list[_Tensor] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])
    opcodes: list[tuple[int, str | None]] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def tensor(self, shape: tuple[int, ...] | list[int], dtype: Any = np.float32, name: str = "") -> int:
        """A new activation tensor; returns its index."""
        self.tensors.append(_Tensor(tuple(int(s) for s in shape), _DTYPES[np.dtype(dtype)],
                                    name or f"t{len(self.tensors)}"))
        return len(self.tensors) - 1

    def const(self, array: Any, name: str = "", dtype: Any = None) -> int:
        """A constant tensor holding ``array`` (little-endian, C order)."""
        arr = np.ascontiguousarray(np.asarray(array, dtype=dtype))
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        index = self.tensor(arr.shape, arr.dtype, name or f"c{len(self.tensors)}")
        self.buffers.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        self.tensors[index].buffer = len(self.buffers) - 1
        return index

    def _opcode(self, builtin: int, custom: str | None) -> int:
        key = (builtin, custom)
        if key not in self.opcodes:
            self.opcodes.append(key)
        return self.opcodes.index(key)

    def op(self, name: str, inputs: list[int], outputs: list[int], options: str | None = None,
           **fields: Any) -> None:
        """A builtin operator by its ``BuiltinOperator`` name; ``options`` names the options table
        (e.g. ``"Conv2DOptions"``) and ``fields`` its fields in snake_case."""
        code = self._opcode(getattr(BuiltinOperator, name), None)
        opt_type = getattr(BuiltinOptions, options) if options else 0
        self.ops.append(_Op(code, list(inputs), list(outputs), opt_type,
                            (options, fields) if options else None))

    def custom(self, name: str, inputs: list[int], outputs: list[int], options: bytes = b"") -> None:
        """A custom operator (LCE's ``LceQuantize``, ``LceBconv2d``, ...) with flexbuffer options."""
        code = self._opcode(BuiltinOperator.CUSTOM, name)
        self.ops.append(_Op(code, list(inputs), list(outputs), custom=options))

    # -- serialization --------------------------------------------------------------------------
    def serialize(self) -> bytes:
        """The ``.tflite`` flatbuffer: buffers, tensors, operators, the subgraph, operator codes, model."""
        b = flatbuffers.Builder(1024 + sum(len(x) for x in self.buffers))
        buffers = [_buffer(b, data) for data in self.buffers]
        tensors = [_tensor(b, t) for t in self.tensors]
        ops = [self._operator(b, op) for op in self.ops]
        subgraph = self._subgraph(b, tensors, ops)
        codes = [_operator_code(b, builtin, custom) for builtin, custom in self.opcodes]
        codes_vec, subgraphs_vec, buffers_vec = _offsets(b, codes), _offsets(b, [subgraph]), _offsets(b, buffers)
        description = b.CreateString("onebit")
        Model = _schema("Model")
        Model.ModelStart(b)
        Model.ModelAddVersion(b, 3)
        Model.ModelAddOperatorCodes(b, codes_vec)
        Model.ModelAddSubgraphs(b, subgraphs_vec)
        Model.ModelAddDescription(b, description)
        Model.ModelAddBuffers(b, buffers_vec)
        b.Finish(Model.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _operator(self, b: flatbuffers.Builder, op: _Op) -> int:
        Operator = _schema("Operator")
        opt_off = self._options(b, op.options) if op.options else None
        custom_off = b.CreateByteVector(op.custom) if op.custom is not None else None
        in_off, out_off = _ints(b, op.inputs), _ints(b, op.outputs)
        Operator.OperatorStart(b)
        Operator.OperatorAddOpcodeIndex(b, op.code)
        Operator.OperatorAddInputs(b, in_off)
        Operator.OperatorAddOutputs(b, out_off)
        if opt_off is not None:
            Operator.OperatorAddBuiltinOptionsType(b, op.options_type)
            Operator.OperatorAddBuiltinOptions(b, opt_off)
        if custom_off is not None:
            Operator.OperatorAddCustomOptions(b, custom_off)
        return Operator.OperatorEnd(b)

    def _subgraph(self, b: flatbuffers.Builder, tensors: list[int], ops: list[int]) -> int:
        SubGraph = _schema("SubGraph")
        tensors_vec, ops_vec = _offsets(b, tensors), _offsets(b, ops)
        in_vec, out_vec = _ints(b, self.inputs), _ints(b, self.outputs)
        sg_name = b.CreateString("main")
        SubGraph.SubGraphStart(b)
        SubGraph.SubGraphAddTensors(b, tensors_vec)
        SubGraph.SubGraphAddInputs(b, in_vec)
        SubGraph.SubGraphAddOutputs(b, out_vec)
        SubGraph.SubGraphAddOperators(b, ops_vec)
        SubGraph.SubGraphAddName(b, sg_name)
        return SubGraph.SubGraphEnd(b)

    @staticmethod
    def _options(b: flatbuffers.Builder, spec: tuple[str, dict[str, Any]]) -> int:
        name, fields = spec
        module = importlib.import_module(f"{tflite.__name__}.{name}")
        vectors = {}
        for key, value in fields.items():  # vectors must be built before the table starts
            if isinstance(value, (list, tuple)):
                b.StartVector(4, len(value), 4)
                for v in reversed(value):
                    b.PrependInt32(int(v))
                vectors[key] = b.EndVector()
        getattr(module, f"{name}Start")(b)
        for key, value in fields.items():
            camel = "".join(part[:1].upper() + part[1:] for part in key.split("_"))
            getattr(module, f"{name}Add{camel}")(b, vectors.get(key, value))
        return getattr(module, f"{name}End")(b)


# --------------------------------------------------------------------------------------------------
# Flatbuffer pieces (each built before the table that refers to it, as flatbuffers require)
# --------------------------------------------------------------------------------------------------
def _schema(name: str) -> Any:
    """The generated builder module of one schema table (``tflite.Model``, ``tflite.Tensor``, ...)."""
    return importlib.import_module(f"tflite.{name}")


def _ints(b: flatbuffers.Builder, values: list[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(v)
    return b.EndVector()


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _bytes(b: flatbuffers.Builder, data: bytes, alignment: int = 16) -> int:
    # Constant data aligned to 16 bytes so kernels may read it in place.
    b.StartVector(1, len(data), alignment)
    b.head = b.head - len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _buffer(b: flatbuffers.Builder, data: bytes) -> int:
    Buffer = _schema("Buffer")
    data_off = _bytes(b, data) if data else None
    Buffer.BufferStart(b)
    if data_off is not None:
        Buffer.BufferAddData(b, data_off)
    return Buffer.BufferEnd(b)


def _tensor(b: flatbuffers.Builder, t: _Tensor) -> int:
    Tensor = _schema("Tensor")
    name_off = b.CreateString(t.name)
    shape_off = _ints(b, list(t.shape))
    Tensor.TensorStart(b)
    Tensor.TensorAddShape(b, shape_off)
    Tensor.TensorAddType(b, t.dtype)
    Tensor.TensorAddBuffer(b, t.buffer)
    Tensor.TensorAddName(b, name_off)
    return Tensor.TensorEnd(b)


def _operator_code(b: flatbuffers.Builder, builtin: int, custom: str | None) -> int:
    OperatorCode = _schema("OperatorCode")
    custom_off = b.CreateString(custom) if custom is not None else None
    OperatorCode.OperatorCodeStart(b)
    OperatorCode.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, 127))
    OperatorCode.OperatorCodeAddBuiltinCode(b, builtin)
    OperatorCode.OperatorCodeAddVersion(b, 1)
    if custom_off is not None:
        OperatorCode.OperatorCodeAddCustomCode(b, custom_off)
    return OperatorCode.OperatorCodeEnd(b)
