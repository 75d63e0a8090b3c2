//! Gang placement under the DT-FM cost model.
