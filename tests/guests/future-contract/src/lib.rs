//! Test fixture: a component built against `gatehouse:policy@0.1.9`, which
//! imports `gatehouse:policy/telemetry`. A gateway that does not implement
//! it must refuse to load the policy, naming the import.
//!
//! Only the WebAssembly build has the component exports (a native build of
//! the workspace compiles nothing here).

#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({ path: "wit", world: "newer-policy" });

    use exports::gatehouse::policy::handler::{Guest, GuestPolicy};

    struct Counting;

    impl GuestPolicy for Counting {
        fn new(config: String) -> Result<Self, String> {
            gatehouse::policy::telemetry::emit(&config, 1);
            Ok(Counting)
        }
    }

    struct Export;

    impl Guest for Export {
        type Policy = Counting;
    }

    export!(Export);
}
