hsm_add_fuzzer(fuzz_listing SOURCES fuzz_listing.cc LIBS hsm_http_listing
               CORPUS ${CMAKE_SOURCE_DIR}/tests/corpus/listings)
