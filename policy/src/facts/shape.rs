//! A generic, owned view of a `pg_query` parse tree.
//!
//! `pg_query`'s protobuf types derive `serde::Serialize` for every field of every node. Feeding
//! them through the serializer below yields a [`Shape`]: structs keep their type name and field
//! names, everything else becomes a sequence, a string, an integer, a boolean or nothing. The
//! scanner then visits *every* field of *every* node without a hand-written list of the ~270
//! node types, so a node type or field added by a future PostgreSQL grammar cannot hide a table
//! or a function call from the classifier.
//!
//! Two wrappers are flattened on the way: the `Node { node: oneof }` box and the oneof variant
//! itself (its payload struct carries the same name), so `Some(Node(SelectStmt(..)))` is just a
//! `Shape::Struct` named `"SelectStmt"`.
//!
//! Not guaranteed: floats and byte strings are dropped (the parse tree has none that matter
//! here), and unsigned values above `i64::MAX` saturate. Depth is bounded by the caller: `prost`
//! refuses to decode a tree nested more than 100 messages deep, so `pg_query::parse` never hands
//! us anything deeper.

use serde::Serialize;
use serde::ser::{self, SerializeSeq as _};

use super::error::ClassifyError;

/// One node of the generic tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A protobuf message: its type name and its fields in declaration order.
    Struct {
        name: &'static str,
        fields: Vec<(&'static str, Shape)>,
    },
    Seq(Vec<Shape>),
    Str(String),
    Int(i64),
    Bool(bool),
    /// `None`, unit, and the values we drop (floats, bytes).
    Null,
}

impl Shape {
    /// Converts any serializable parse-tree value.
    pub(crate) fn of<T: Serialize + ?Sized>(value: &T) -> Result<Shape, ClassifyError> {
        value.serialize(ShapeSerializer)
    }

    /// The struct's name, or `""` for anything that is not a struct.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Shape::Struct { name, .. } => name,
            _ => "",
        }
    }

    /// A field of a struct, if this is a struct and has it.
    pub(crate) fn field(&self, key: &str) -> Option<&Shape> {
        match self {
            Shape::Struct { fields, .. } => fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Shape::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Shape::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> bool {
        matches!(self, Shape::Bool(true))
    }

    /// The elements of a sequence; empty for anything else.
    pub(crate) fn items(&self) -> &[Shape] {
        match self {
            Shape::Seq(items) => items,
            _ => &[],
        }
    }

    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, Shape::Null)
    }

    /// A string field, or `""`.
    pub(crate) fn str_field(&self, key: &str) -> &str {
        self.field(key).and_then(Shape::as_str).unwrap_or("")
    }
}

struct ShapeSerializer;

/// Collects sequences, tuples and (unused) maps.
struct SeqBuilder(Vec<Shape>);

/// Collects structs and struct variants.
struct StructBuilder {
    name: &'static str,
    fields: Vec<(&'static str, Shape)>,
}

impl ser::Error for ClassifyError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ClassifyError::Tree(msg.to_string())
    }
}

impl ser::Serializer for ShapeSerializer {
    type Ok = Shape;
    type Error = ClassifyError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = SeqBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructBuilder;

    fn serialize_bool(self, v: bool) -> Result<Shape, ClassifyError> {
        Ok(Shape::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Shape, ClassifyError> {
        Ok(Shape::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, _v: f32) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_f64(self, _v: f64) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_char(self, v: char) -> Result<Shape, ClassifyError> {
        Ok(Shape::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Shape, ClassifyError> {
        Ok(Shape::Str(v.to_owned()))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_none(self) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Shape, ClassifyError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<Shape, ClassifyError> {
        Ok(Shape::Null)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Shape, ClassifyError> {
        value.serialize(self)
    }
    /// A oneof variant: the payload struct already carries the node's name.
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<Shape, ClassifyError> {
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ClassifyError> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ClassifyError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ClassifyError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ClassifyError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<SeqBuilder, ClassifyError> {
        self.serialize_seq(len)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<StructBuilder, ClassifyError> {
        Ok(StructBuilder {
            name,
            fields: Vec::with_capacity(len),
        })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<StructBuilder, ClassifyError> {
        self.serialize_struct(name, len)
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClassifyError> {
        self.0.push(value.serialize(ShapeSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Shape, ClassifyError> {
        Ok(Shape::Seq(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClassifyError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Shape, ClassifyError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClassifyError> {
        self.serialize_element(value)
    }
    fn end(self) -> Result<Shape, ClassifyError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClassifyError> {
        self.serialize_element(value)
    }
    fn end(self) -> Result<Shape, ClassifyError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for SeqBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ClassifyError> {
        self.serialize_element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClassifyError> {
        self.serialize_element(value)
    }
    fn end(self) -> Result<Shape, ClassifyError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ClassifyError> {
        self.fields.push((key, value.serialize(ShapeSerializer)?));
        Ok(())
    }
    /// `Node` is only the protobuf box around a oneof: hand back its content.
    fn end(mut self) -> Result<Shape, ClassifyError> {
        if self.name == "Node" {
            return Ok(self.fields.pop().map_or(Shape::Null, |(_, v)| v));
        }
        Ok(Shape::Struct {
            name: self.name,
            fields: self.fields,
        })
    }
}

impl ser::SerializeStructVariant for StructBuilder {
    type Ok = Shape;
    type Error = ClassifyError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ClassifyError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<Shape, ClassifyError> {
        ser::SerializeStruct::end(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_boxes_and_variants_are_flattened() {
        let parsed = pg_query::parse("SELECT a FROM s.t", 0).unwrap();
        let node = parsed.protobuf.stmts[0].stmt.as_ref().unwrap();
        let shape = Shape::of(node.as_ref()).unwrap();
        assert_eq!(shape.name(), "SelectStmt");
        let from = shape.field("from_clause").unwrap().items();
        assert_eq!(from[0].name(), "RangeVar");
        assert_eq!(from[0].str_field("schemaname"), "s");
        assert_eq!(from[0].str_field("relname"), "t");
        assert!(!shape.field("where_clause").unwrap().is_present());
    }
}
