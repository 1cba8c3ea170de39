// A linear pre-pass that keeps only the HTML a listing parser needs before the page is
// handed to gumbo.
//
// Why: gumbo's tree construction is quadratic in nesting depth (10,000 nested <div>s take
// 0.6 s, 30,000 exhaust memory) and its formatting-element reconstruction can clone
// elements per text run. Listings need only links, table rows and <pre> lines, so every
// other tag is dropped (its text kept), comments, doctype and processing instructions are
// dropped, the contents of script, style, title, textarea and similar raw-text elements are
// dropped, and <table>/<pre> nesting is capped. What remains parses in linear time.
//
// Contract: pure function; linear in the input; never throws (except std::bad_alloc).
// Tags are recognised the way the HTML tokenizer does (quoted attribute values may contain
// '<' and '>'); attribute text of kept tags is copied byte for byte, so entity decoding is
// still done by gumbo.
#pragma once

#include <string>
#include <string_view>

namespace hsm::remote::http {

inline constexpr int kMaxTableDepth = 8;
inline constexpr int kMaxPreDepth = 4;

std::string filterListingHtml(std::string_view html);

}  // namespace hsm::remote::http
