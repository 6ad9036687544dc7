//! The `export_plugins!` macro and what it expands to.

/// Exports a library's plugin entries: generates the library's root module,
/// so the host can find, check and load it.
///
/// Call it once, at the root of a `cdylib` crate, with expressions that
/// build [`PluginEntry`](crate::PluginEntry)s:
///
/// ```ignore
/// kozmo_interface::export_plugins![my_entry(), other_entry()];
/// ```
///
/// The generated glue runs every call the host makes into the library
/// (listing entries, loaders, `id`, `properties`, `handle`, `abort`,
/// `finalize`) under `catch_unwind`, so a panic reaches the host as a
/// [`PluginError`](crate::PluginError) carrying the panic message; it also
/// installs a logger that forwards `log` records to the host.
#[macro_export]
macro_rules! export_plugins {
    (@abi_epoch $epoch:expr; $($entry:expr),* $(,)?) => {
        #[doc(hidden)]
        extern "C" fn __kozmo_entries() -> $crate::__private::EntriesResult {
            fn make() -> ::std::vec::Vec<$crate::PluginEntry> {
                ::std::vec![$($entry),*]
            }
            $crate::__private::export_entries(make)
        }

        #[doc(hidden)]
        fn __kozmo_root_module() -> $crate::__private::PluginModule_Ref {
            $crate::__private::build_module(__kozmo_entries, $epoch, cfg!(panic = "unwind"))
        }

        #[doc(hidden)]
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn __kozmo_erased_module() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(__kozmo_root_module)
            }
            // SAFETY: the constructor returns the module of the declared type.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::__private::PluginModule_Ref>(
                    __kozmo_erased_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
    ($($entry:expr),* $(,)?) => {
        $crate::export_plugins!(@abi_epoch $crate::__private::ABI_EPOCH; $($entry),*);
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exported_symbol_is_abi_stables_root_module_name() {
        assert_eq!(
            crate::host::ROOT_MODULE_SYMBOL,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
