"""Series keys are unambiguous (issue 17): tag values holding ``,`` ``=`` braces, dots,
quotes, spaces or backslashes never render two different series to the same key, and
the ``series`` tag written back keeps them apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hostile_support import END, TRAIN_END, retrain, score, scores_by_series, write_clean
from hypothesis import given, settings
from hypothesis import strategies as st

from cricket.config import SeriesSelector
from cricket.influx.influxql import InfluxQLSource
from cricket.series import SeriesKey

#: the collision reported in issue 17
A = SeriesKey.make("waveform", "value", {"dc": "x", "host": "y,host=z"})
B = SeriesKey.make("waveform", "value", {"dc": "x,host=y", "host": "z"})

_text = st.text(alphabet=st.sampled_from(list("ab.,={}\\ \"'x")) | st.characters(), max_size=8)
_keys = st.builds(
    SeriesKey.make,
    _text.filter(bool),
    _text.filter(bool),
    st.dictionaries(_text.filter(bool), _text, max_size=3),
)


def test_the_reported_collision_renders_two_keys_that_parse_back():
    assert str(A) != str(B)
    assert SeriesKey.parse(str(A)) == A and SeriesKey.parse(str(B)) == B
    # plain keys render as they always did (bundles keyed by them still load)
    assert str(SeriesKey.make("waveform", "value", {"host": "cricket001"})) == (
        "waveform.value{host=cricket001}"
    )
    # a dot in the measurement and one in the field stay apart too
    assert str(SeriesKey.make("a.b", "c")) != str(SeriesKey.make("a", "b.c"))


@settings(max_examples=400, deadline=None)
@given(_keys, _keys)
def test_keys_render_to_the_same_text_only_when_they_are_equal(a, b):
    assert (str(a) == str(b)) == (a == b)
    assert SeriesKey.parse(str(a)) == a


def test_colliding_tag_values_are_trained_scored_and_written_apart(pipeline_settings):
    """Both series of the reported collision are discovered, get their own detector,
    are scored with it (no series flagged wholesale) and are written under their own
    ``series`` tag with their own values."""
    written = write_clean(pipeline_settings, [A, B])
    selector = SeriesSelector(measurement="waveform", field="value", group_by=["dc", "host"])
    with InfluxQLSource(pipeline_settings) as src:
        assert src.discover(selector) == sorted([A, B])
    trained = retrain(selector)
    assert trained["series_models"] == 2
    at = TRAIN_END + pd.Timedelta(hours=1)
    summary = score(selector, at)
    assert summary["scored"] == 2 and summary["events"] == 0
    got = scores_by_series(pipeline_settings, selector, TRAIN_END, at)
    assert set(got) == {str(A), str(B)}
    for key in (A, B):
        rows = got[str(key)]
        assert rows["dc"].iloc[0] == key.tag_dict["dc"] and rows["host"].iloc[0] == key.tag_dict["host"]
        expected = written[key].reindex(rows.index).to_numpy()
        assert np.allclose(rows["value"].to_numpy(), expected)
        assert rows["anomalous"].mean() < 0.05
    assert END > at
