# Listing parsers and URL helpers (src/remote/http). In a fuzz build the library is used only
# by fuzzers, so it is built with coverage instrumentation too; otherwise libFuzzer would
# see only the edges of the harness itself.
target_compile_options(hsm_http_listing PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
hsm_add_fuzzer(fuzz_listing SOURCES fuzz_listing.cc LIBS hsm_http_listing
               CORPUS ${CMAKE_SOURCE_DIR}/tests/corpus/listings)
