//! Marshal tests: integer packing, encodings and symbol links, malformed input, and the
//! limits on depth and on how far links may expand a document.

use super::write::Writer;
use super::*;

#[test]
fn longs_round_trip_at_every_boundary() {
    for n in [
        0,
        1,
        122,
        123,
        255,
        256,
        -1,
        -123,
        -124,
        -256,
        -257,
        65_535,
        65_536,
        (1 << 30) - 1,
        -(1 << 30),
    ] {
        let node = Node::Int(n);
        let bytes = encode_raw(&node);
        assert_eq!(decode_raw(&bytes).unwrap(), node, "{n}");
    }
}

#[test]
fn fixnums_beyond_what_ruby_writes_as_fixnums_are_refused() {
    // [2**31 - 1, "s", @1]: read as a Fixnum and written again as the Bignum Ruby writes,
    // the link would point at the Bignum instead of the String (found by cargo fuzz).
    let bytes = [
        4, 8, b'[', 8, b'i', 4, 0xff, 0xff, 0xff, 0x7f, b'"', 6, b's', b'@', 6,
    ];
    let err = decode_raw(&bytes).unwrap_err();
    assert!(
        err.to_string().contains("2147483647 written as a Fixnum"),
        "{err}"
    );
    let fits = [
        4, 8, b'[', 7, b'i', 4, 0xff, 0xff, 0xff, 0x3f, b'"', 6, b's',
    ];
    assert!(decode_raw(&fits).is_ok());
}

#[test]
fn links_cannot_nest_a_value_deeper_than_the_limit() {
    // [deep, [[[@1]]]] where deep nests 30 arrays: fine as written, 34 deep expanded
    // (found by cargo fuzz: the expanded value could not be encoded and read again).
    let mut deep = Node::Int(1);
    for _ in 0..30 {
        deep = Node::Array(vec![deep]);
    }
    let linked = Node::Array(vec![Node::Array(vec![Node::Array(vec![Node::Link(1)])])]);
    let bytes = encode_raw(&Node::Array(vec![deep.clone(), linked]));
    assert!(decode_raw(&bytes).is_ok());
    let err = decode(&bytes).unwrap_err();
    assert!(err.to_string().contains("once links are expanded"), "{err}");
    // A shallow link is resolved.
    let near = encode_raw(&Node::Array(vec![deep, Node::Link(1)]));
    assert!(decode(&near).is_ok());
}

#[test]
fn bignums_are_what_ruby_writes() {
    // 1795237728 as Ruby 3.1 wrote it in a captured :msgtime.
    let bytes = [4, 8, b'l', b'+', 7, 0x60, 0x27, 0x01, 0x6b];
    assert_eq!(decode(&bytes).unwrap(), Ruby::Int(1_795_237_728));
    assert_eq!(encode(&Ruby::Int(1_795_237_728)), bytes);
    let big = Ruby::Int(-(1i64 << 40));
    assert_eq!(decode(&encode(&big)).unwrap(), big);
}

#[test]
fn strings_keep_their_encoding_and_symbols_link() {
    let node = Node::Hash(vec![
        (
            Node::Symbol("agent".into()),
            Node::Str(b"rpcutil".to_vec(), Encoding::Utf8),
        ),
        (
            Node::Symbol("action".into()),
            Node::Str(b"ping".to_vec(), Encoding::UsAscii),
        ),
        (Node::Symbol("body".into()), Node::Link(1)),
    ]);
    let bytes = encode_raw(&node);
    // The second E is a symlink to the first.
    assert!(bytes.windows(3).any(|w| w == [b';', 6, b'F']));
    assert_eq!(decode_raw(&bytes).unwrap(), node);
    let Ruby::Hash(pairs) = decode(&bytes).unwrap() else {
        panic!("not a hash")
    };
    assert_eq!(pairs[2].1, Ruby::Str("rpcutil".into()));
}

#[test]
fn malformed_input_is_a_typed_error() {
    let cases: &[&[u8]] = &[
        b"",
        &[4, 9, b'0'],
        &[4, 8],
        &[4, 8, b'"', 0x7f],
        &[4, 8, b'o', b':', 6, b'X', 0],
        &[4, 8, b'@', 6],
        &[4, 8, b'[', 6, b'@', 0],
        &[4, 8, b';', 0],
        &[4, 8, b'I', b'"', 6, b'a', 6, b':', 6, b'X', b'T'],
        &[4, 8, b'0', b'0'],
        &[4, 8, b'f', 6, b'x'],
        &[4, 8, b'[', 4, 0xff, 0xff, 0xff, 0x7f],
    ];
    for case in cases {
        assert!(decode(case).is_err(), "{case:?}");
    }
    // Deep nesting is refused, not a stack overflow.
    let mut deep = vec![4, 8];
    deep.extend(std::iter::repeat_n([b'[', 6], 10_000).flatten());
    deep.push(b'0');
    assert!(decode(&deep).is_err());
}

#[test]
fn a_link_to_a_large_string_cannot_multiply_it() {
    // 600 links to one 64 KiB string: 38 MiB once expanded, from a 66 KiB document.
    let mut bytes = vec![4, 8, b'['];
    let mut writer = Writer {
        out: Vec::new(),
        symbols: Vec::new(),
    };
    writer.long(601);
    bytes.extend(writer.out);
    bytes.push(b'"');
    let mut writer = Writer {
        out: Vec::new(),
        symbols: Vec::new(),
    };
    writer.long(64 * 1024);
    bytes.extend(writer.out);
    bytes.extend(std::iter::repeat_n(b'x', 64 * 1024));
    for _ in 0..600 {
        bytes.extend([b'@', 6]);
    }
    assert!(decode_raw(&bytes).is_ok());
    assert!(decode(&bytes).is_err());
}

#[test]
fn links_cannot_expand_without_bound() {
    // Each array holds the previous one twice: 2^39 values once expanded, 40 as written.
    let mut bytes = vec![4, 8, b'[', 5 + 40];
    bytes.extend([b'[', 0]);
    for i in 1..40u8 {
        bytes.extend([b'[', 7, b'@', i + 5, b'@', i + 5]);
    }
    assert!(decode_raw(&bytes).is_ok());
    let result = decode(&bytes);
    assert!(result.is_err(), "{result:?}");
}
