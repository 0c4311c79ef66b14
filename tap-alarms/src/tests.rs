//! Unit tests of the alarms step over a mocked [`AlarmsApi`].
