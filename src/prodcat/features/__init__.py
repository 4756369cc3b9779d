"""The feature stage: the content-addressed cache (`cache`) and encoding a catalogue through it
(`encode`), so that every photo and title is encoded once per encoder version."""
