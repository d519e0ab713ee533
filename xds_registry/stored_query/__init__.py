"""ITI-18 Registry Stored Query and ITI-51 Multi-Patient Stored Query.

* :mod:`.parameters` -- the ``$XDS...`` value grammar and each query's parameter table (pure);
* :mod:`.queries` -- one SQL statement per stored query (+ one for associations), ``LIMIT max+1``;
* :mod:`.execute` -- dispatch, returnType, single-patient rule, LeafClass/ObjectRef elements;
* :mod:`.operations` -- the SOAP handlers registered in :mod:`xds_registry.soap_operations`.
"""
