use proptest::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::auth::endpoints::check_lenient_bodies;

#[derive(Debug, PartialEq, Deserialize)]
struct Login {
    login: String,
    password: String,
}

fn read(s: &str) -> Result<Value, Error> {
    read_object(s.as_bytes()).map(Value::Object)
}

#[test]
fn the_java_clients_body_and_friends() {
    let want: Login = serde_json::from_value(json!({"login": "demo", "password": "secret"})).unwrap();
    for body in [
        "{login:demo,password:secret}",
        " {\n\tlogin : demo ,\r\n password:secret } \n",
        "{\"login\":demo,password:\"secret\"}",
        "{login:\"demo\",\"password\":secret}",
    ] {
        assert_eq!(from_slice::<Login>(body.as_bytes()).unwrap(), want, "{body:?}");
    }
    // Bare text keeps every character that does not end it, UTF-8 included.
    let v = read("{login:d.e-m_o@x.y+1!,password:p%a$s~s*()&^?|<>`é€}").unwrap();
    assert_eq!(v, json!({"login": "d.e-m_o@x.y+1!", "password": "p%a$s~s*()&^?|<>`é€"}));
    assert_eq!(read("{}").unwrap(), json!({}));
}

#[test]
fn bare_literals_keep_their_json_meaning() {
    let v = read("{a:1,b:-0.5e3,c:true,d:null,e:01,f:1.,g:-,h:+1,i:0x10,j:NaN}").unwrap();
    assert_eq!(
        v,
        json!({"a": 1, "b": -500.0, "c": true, "d": null, "e": "01", "f": "1.", "g": "-", "h": "+1",
               "i": "0x10", "j": "NaN"})
    );
    // So a number is not a string: this is what standard JSON refuses too.
    assert!(from_slice::<Login>(b"{login:demo,password:123456}").is_err());
    assert!(from_slice::<Login>(b"{login:demo,password:\"123456\"}").is_ok());
    // A bare literal as a name is just its text.
    assert_eq!(read("{1:x,null:y}").unwrap(), json!({"1": "x", "null": "y"}));
    assert_eq!(read("{a:1e400}").unwrap_err().what, "bad number");
}

#[test]
fn characters_that_end_a_bare_token_are_not_part_of_it() {
    for body in [
        "{login:de mo,password:x}",
        "{login:de\tmo,password:x}",
        "{login:de\"mo\",password:x}",
        "{login:de'mo',password:x}",
        "{login:de;mo,password:x}",
        "{login:de=mo,password:x}",
        "{login:de#mo,password:x}",
        "{login:de/mo,password:x}",
        "{login:de\\mo,password:x}",
        "{login:de[mo],password:x}",
        "{login:de{mo},password:x}",
        "{login:de\u{1}mo,password:x}",
        "{login:de\u{7f}mo,password:x}",
        "{login:de:mo,password:x}",
    ] {
        assert!(read(body).is_err(), "accepted {body:?}");
    }
}

#[test]
fn empty_values_nested_values_and_repeated_names() {
    assert_eq!(read("{login:,password:x}").unwrap_err().what, "empty value");
    assert_eq!(read("{login:demo,password:}").unwrap_err().what, "empty value");
    assert_eq!(read("{:demo}").unwrap_err().what, "empty value");
    assert_eq!(read("{login:\"\",password:\"\"}").unwrap(), json!({"login": "", "password": ""}));
    assert_eq!(read("{login:{a:b},password:x}").unwrap_err().what, "nested value");
    assert_eq!(read("{login:[a],password:x}").unwrap_err().what, "nested value");
    assert_eq!(read("{login:a,login:b,password:x}").unwrap_err().what, "a name given twice");
    assert_eq!(read("{login:a,\"login\":a,password:x}").unwrap_err().what, "a name given twice");
}

#[test]
fn nothing_else_that_json_refuses() {
    for body in [
        "",
        " ",
        "login:demo",
        "[login,demo]",
        "{login:demo,}",
        "{,login:demo}",
        "{login demo}",
        "{login=demo}",
        "{login=>demo}",
        "{login:demo;password:x}",
        "{'login':'demo'}",
        "{login:demo}x",
        "{login:demo}}",
        "{login:demo} {a:b}",
        "/*c*/{login:demo}",
        "{login:demo // c\n}",
        "{login:\"a\nb\"}",
        "{login:\"\\x41\"}",
        "{login:\"\\ud800\"}",
        "\u{feff}{login:demo}",
        "{login:demo,,password:x}",
        "{\"login\"demo}",
    ] {
        assert!(read(body).is_err(), "accepted {body:?}");
    }
    assert!(read_object(b"{login:\xff\xfe,password:x}").is_err(), "bare text must be UTF-8");
    assert!(read_object(b"{login:\"\xc3\",password:x}").is_err(), "strings must be UTF-8");
}

#[test]
fn a_truncated_body_is_never_complete() {
    let body = "{login:demo,\"password\":\"se\\\"cret\"}";
    assert!(read(body).is_ok());
    for cut in 0..body.len() {
        let err = read_object(&body.as_bytes()[..cut]).unwrap_err();
        assert!(err.at <= cut, "reading stopped past the end: {err} for cut {cut}");
    }
}

/// Pieces the generated bodies are made of: well-formed ones, and ones that break the grammar.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("login".to_string()),
        Just("password".to_string()),
        Just("refreshToken".to_string()),
        Just("token".to_string()),
        Just("accessTokenLifeTime".to_string()),
        Just("oneTimeTokenLifeTime".to_string()),
        "[a-z0-9._@-]{0,6}",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        "-?[0-9]{1,4}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,3})?",
        Just("null".to_string()),
        Just("true".to_string()),
        "[ \\t\\n\\r,:{}\\[\\]\"'\\\\;=#/]{1,2}",
    ]
}

fn object() -> impl Strategy<Value = Vec<u8>> {
    let member = (piece(), "[ \\t\\n]{0,2}", piece(), "[ \\t\\n]{0,2}")
        .prop_map(|(n, w1, v, w2)| format!("{n}{w1}:{w2}{v}"));
    proptest::collection::vec(member, 0..5).prop_map(|ms| format!("{{{}}}", ms.join(",")).into_bytes())
}

/// Objects made of the auth bodies' own fields, names quoted or bare, values of the kinds those
/// fields take (so the typed comparison sees many bodies each reader accepts).
fn typed_object() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("login"),
        Just("password"),
        Just("refreshToken"),
        Just("token"),
        Just("accessTokenLifeTime"),
        Just("refreshTokenLifeTime"),
        Just("oneTimeTokenLifeTime"),
    ];
    let name = (name, any::<bool>()).prop_map(|(n, q)| if q { format!("\"{n}\"") } else { n.to_string() });
    proptest::collection::vec((name, value()), 1..4).prop_map(|ms| {
        let ms: Vec<String> = ms.into_iter().map(|(n, v)| format!("{n}:{v}")).collect();
        format!("{{{}}}", ms.join(",")).into_bytes()
    })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z._@~-][a-zA-Z0-9._@~-]{0,8}",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        "[1-9][0-9]{0,5}",
        Just("null".to_string()),
    ]
}

/// Login bodies: both fields, either order, names quoted or not, whitespace around.
fn login_object() -> impl Strategy<Value = Vec<u8>> {
    (any::<[bool; 3]>(), value(), value(), "[ \\t\\n]{0,2}").prop_map(|([q1, q2, swap], v1, v2, ws)| {
        let n = |name: &str, q: bool| if q { format!("\"{name}\"") } else { name.to_string() };
        let (a, b) = (format!("{}:{ws}{v1}", n("login", q1)), format!("{ws}{}:{v2}", n("password", q2)));
        let (a, b) = if swap { (b, a) } else { (a, b) };
        format!("{ws}{{{a},{b}}}{ws}").into_bytes()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => object(),
        3 => typed_object(),
        3 => login_object(),
        2 => (login_object(), any::<prop::sample::Index>()).prop_map(|(mut b, i)| {
            b.truncate(i.index(b.len() + 1));
            b
        }),
        2 => (typed_object(), any::<prop::sample::Index>()).prop_map(|(mut b, i)| {
            b.truncate(i.index(b.len() + 1));
            b
        }),
        // One byte changed, inserted or cut off somewhere.
        2 => (object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, i, x)| {
            let i = i.index(b.len());
            b[i] = x;
            b
        }),
        2 => (object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, i, x)| {
            b.insert(i.index(b.len() + 1), x);
            b
        }),
        2 => (object(), any::<prop::sample::Index>()).prop_map(|(mut b, i)| {
            b.truncate(i.index(b.len() + 1));
            b
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..48),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The same comparison as the fuzz target (fuzz/fuzz_targets/lenient_json.rs), on generated
    /// bodies, for every auth endpoint's body type.
    #[test]
    fn agrees_with_serde_json_and_never_panics(bytes in body()) {
        check_lenient_bodies(&bytes);
    }

    /// Any flat object `serde_json` writes reads back the same, whatever the names and strings.
    #[test]
    fn reads_back_what_serde_json_writes(m in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..5)) {
        let text = serde_json::to_string(&m).unwrap();
        let read = read_object(text.as_bytes()).unwrap();
        prop_assert_eq!(Value::Object(read), serde_json::to_value(&m).unwrap());
    }
}
