"""ebXML RegRep 3.0 messages of XDS.b / XDS-I.b <-> the typed metadata model."""
