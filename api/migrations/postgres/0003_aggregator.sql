-- Federated jobs: the node chosen to aggregate the participants' updates (the one whose largest
-- RTT to the data sites is smallest), when the network model could tell.
ALTER TABLE jobs ADD COLUMN aggregator TEXT;
