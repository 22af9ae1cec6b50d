//! `bogus`: a wasi:http/proxy component that also imports `acme:bogus/thing`, which no MadBase
//! provides; deploying it must fail with a clear error (and leave the live version serving).

use wstd::http::{Body, Error, Request, Response};

wit_bindgen::generate!({
    inline: "package acme:bogus; interface thing { poke: func(); } world bogus { import thing; }",
    world: "bogus",
});

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    acme::bogus::thing::poke();
    Ok(Response::new(Body::from("poked")))
}
