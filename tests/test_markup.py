"""The element builder the report, the notebook view and the ui share: it always escapes."""

from __future__ import annotations

import pytest

from layerflow.markup import Markup, esc, join, num, pattern, tag, void

BAD = "<script>alert(1)</script> \"x\" & 'y'"
SAFE = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;x&quot; &amp; &#x27;y&#x27;"


def test_tag_escapes_text_and_attributes_and_keeps_markup():
    assert tag("p", BAD, title=BAD) == f'<p title="{SAFE}">{SAFE}</p>'
    assert tag("p", tag("b", "x"), esc("&")) == "<p><b>x</b>&amp;</p>"
    assert tag("td", 3, data_v=3) == '<td data-v="3">3</td>'
    assert join(["<", Markup("<br>")]) == "&lt;<br>"
    many = [tag("i", k) for k in range(20)] + ["<"]  # the fast path, then one to escape
    assert tag("p", *many).endswith("<i>19</i>&lt;</p>")


def test_attributes_are_named_and_left_out_as_html_writes_them():
    assert tag("th", "x", class_="a", data_type="num", hidden=True, title=None, lang=False) == (
        '<th class="a" data-type="num" hidden>x</th>'
    )
    assert void("rect", x=1.23456789, y=num(2.5, ".1f"), clip_path="url(#p)") == (
        '<rect x="1.23457" y="2.5" clip-path="url(#p)"/>'
    )
    with pytest.raises(TypeError, match="takes a number"):
        num("<b>", ".2f")  # type: ignore[arg-type]


def _bar(cls: str, x: float, task: str) -> Markup:
    return void("rect", class_=cls, x=x, data_task=task, data_tip=task)


def test_a_pattern_fills_escaped_values_into_markup_made_once():
    bar = pattern(_bar, x=".2f")
    assert bar("bar s-ok", 1.005, BAD) == (
        f'<rect class="bar s-ok" x="1.00" data-task="{SAFE}" data-tip="{SAFE}"/>'
    )
    assert (
        bar("50%", 2, Markup("<b>"))
        == '<rect class="50%" x="2.00" data-task="<b>" data-tip="<b>"/>'
    )
    assert bar(*["a", 1.0, "b"]) == _bar("a", num(1.0, ".2f"), "b")  # as tag() makes it
    with pytest.raises(TypeError):  # a number's hole takes no text
        bar("a", "<script>", "b")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'task'"):
        bar("a", 1.0)


def test_a_pattern_says_what_is_wrong_with_it():
    with pytest.raises(ValueError, match="not a number format"):
        pattern(_bar, x="s")
    with pytest.raises(ValueError, match="formats for no parameter of _bar: \\['y'\\]"):
        pattern(_bar, y=".1f")
    with pytest.raises(ValueError, match="does not put task in its markup"):
        pattern(lambda cls, task: tag("b", cls))
    with pytest.raises(ValueError, match="no parameter to fill"):
        pattern(lambda: tag("br"))
    with pytest.raises(ValueError, match="may not start with _"):
        pattern(lambda _e: tag("b", _e))


def test_a_pattern_parameter_may_be_called_as_a_builtin():
    # regression: the filling function called type() and str() by name, which a
    # parameter named so shadowed (every call failed)
    def cell(type, str):
        return tag("td", str, class_=type)

    fill = pattern(cell)
    assert fill("<a>", "<b>") == '<td class="&lt;a&gt;">&lt;b&gt;</td>'
